"""The base of the API's models, and the JSON Schema generator of the OpenAPI document."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

REF_TEMPLATE = "#/components/schemas/{model}"


class OpenAPI30(GenerateJsonSchema):
    """JSON Schema as OpenAPI 3.0 reads it: ``nullable`` instead of a union with null, ``enum``
    instead of ``const``, and no generated titles."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        """``X | None`` is X with ``nullable: true``."""
        inner = self.generate_inner(schema["schema"])
        if "$ref" in inner:  # OpenAPI 3.0 ignores siblings of $ref
            return {"allOf": [inner], "nullable": True}
        return {**inner, "nullable": True}

    def literal_schema(self, schema: core_schema.LiteralSchema) -> JsonSchemaValue:
        """A literal is an ``enum`` of its values, typed."""
        values = list(schema["expected"])
        kinds = {type(v) for v in values}
        out: JsonSchemaValue = {"enum": values}
        if kinds == {bool}:
            out["type"] = "boolean"
        elif kinds == {str}:
            out["type"] = "string"
        return out

    def field_title_should_be_set(self, schema: Any) -> bool:
        """No ``title`` on fields: the field's name says it."""
        return False

    def generate(self, schema: CoreSchema, mode: JsonSchemaMode = "validation") -> JsonSchemaValue:
        """The schema without generated titles of models."""
        out = super().generate(schema, mode)
        out.pop("title", None)
        for nested in out.get("$defs", {}).values():
            nested.pop("title", None)
        return out


class Resource(BaseModel):
    """A response body. Fields it does not know are ignored (a newer gateway may add some),
    so an older client still reads it; models nested in it are published under their own
    names (``#/components/schemas/Grant``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    @classmethod
    def model_json_schema(
        cls,
        by_alias: bool | None = True,
        ref_template: str = REF_TEMPLATE,
        schema_generator: type[GenerateJsonSchema] = OpenAPI30,
        mode: JsonSchemaMode = "validation",
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The OpenAPI 3.0 schema, nested models referenced by their own names."""
        return super().model_json_schema(by_alias, REF_TEMPLATE, OpenAPI30, mode, **kwargs)


class Sparse(Resource):
    """A response body whose optional fields (those with a default) are absent, not null,
    when they were not given: one shape for several variants (a rewind's result and a
    fork's), each sending only its own fields."""

    @model_serializer(mode="wrap")
    def _given_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        given = self.model_fields_set
        for name, info in type(self).model_fields.items():
            if not info.is_required() and name not in given:
                out.pop(info.alias or name, None)
                out.pop(name, None)
        return out
