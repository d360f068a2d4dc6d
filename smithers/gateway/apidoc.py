"""docs/api.md, rendered from the OpenAPI document (``python -m smithers.gateway.openapi``)."""

from __future__ import annotations

from typing import Any

from smithers.gateway.schemas import JSON, Schema


def _type(schema: Schema) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    kind = str(schema.get("type", "any"))
    if kind == "array":
        kind = f"array of {_type(schema.get('items', {}))}"
    if "enum" in schema:
        kind += " (" + " | ".join(f"`{v}`" for v in schema["enum"]) + ")"
    if schema.get("nullable"):
        kind += ", nullable"
    return kind


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: dict[str, Any]) -> str:
    """docs/api.md: every operation with its scope, parameters, body and responses."""
    out = [
        "# Gateway API",
        "",
        "<!-- Generated from the OpenAPI document by `python -m smithers.gateway.openapi`; do not edit. -->",
        "",
        doc["info"]["description"],
        "",
        "The machine-readable document is served at `GET /v1/openapi.json`.",
        "",
    ]
    schemas = doc["components"]["schemas"]
    for path, item in doc["paths"].items():
        shared_params = item.get("parameters", [])
        for method in ("get", "post", "delete"):
            op = item.get(method)
            if op is None:
                continue
            out += [f"## `{method.upper()} {path}`", "", op["summary"] + ".", ""]
            scope = op.get("x-required-scope")
            out += [f"Scope: `{scope}`." if scope else "No token needed.", ""]
            desc = op.get("description", "").replace(f"Scope: `{scope}`.", "").strip()
            if desc:
                out += [desc, ""]
            params = [*shared_params, *op.get("parameters", [])]
            if params:
                out += ["| parameter | in | type | description |", "|---|---|---|---|"]
                out += [
                    f"| `{p['name']}` | {p['in']} | {_cell(_type(p['schema']))} | {_cell(p['description'])} |"
                    for p in params
                ]
                out.append("")
            body = op.get("requestBody")
            if body is not None:
                name = _type(body["content"][JSON]["schema"])
                schema = schemas[name]
                required = set(schema.get("required", []))
                out += [
                    f"Body (`{name}`{', optional' if not body['required'] else ''}): "
                    + _cell(schema.get("description", "")),
                    "",
                ]
                if schema.get("properties"):
                    out += ["| field | type | required | description |", "|---|---|---|---|"]
                for field, spec in schema.get("properties", {}).items():
                    yes = "yes" if field in required else "no"
                    out.append(
                        f"| `{field}` | {_cell(_type(spec))} | {yes} | {_cell(spec.get('description', ''))} |"
                    )
                out += ["", "Unknown fields are refused with 400 naming the field.", ""]
            out += ["| status | meaning |", "|---|---|"]
            for status, response in op["responses"].items():
                content = response.get("content", {})
                shape = ""
                if JSON in content:
                    shape = f" (`{_type(content[JSON]['schema'])}`)"
                out.append(f"| {status} | {_cell(response['description'])}{shape} |")
            out.append("")
    return "\n".join(out)
