"""The OpenAPI document is built from what the views declare: APIFlask invents nothing, and
the build refuses a route it cannot document fully."""

from __future__ import annotations

import pytest
from apiflask import APIBlueprint, APIFlask

from smithers.gateway.apidoc import AUTH, JSON, RUN_ID_PARAM, errors, reads, schema_ref
from smithers.gateway.auth import requires
from smithers.gateway.openapi import new_app
from smithers.shared.api import Health
from smithers.shared.grants import Scope


def _with(blueprint: APIBlueprint) -> APIFlask:
    app = new_app()
    app.register_blueprint(blueprint)
    return app


def test_a_route_without_any_declaration_is_refused() -> None:
    bp = APIBlueprint("bare", __name__)

    @bp.get("/v1/bare")
    def bare() -> str:
        return ""

    with pytest.raises(RuntimeError, match=r"GET /v1/bare has no documented operation"):
        _with(bp).spec  # the property builds the document


def test_a_route_with_a_model_but_no_summary_is_refused() -> None:
    bp = APIBlueprint("unsummarized", __name__)

    @bp.get("/v1/unsummarized")
    @bp.output(Health)
    def unsummarized() -> Health:
        """A docstring APIFlask would have turned into a summary."""
        return Health(status="ok")

    with pytest.raises(RuntimeError, match=r"GET /v1/unsummarized has no documented operation"):
        _with(bp).spec


def test_a_path_parameter_without_its_description_is_refused() -> None:
    bp = APIBlueprint("undescribed", __name__)

    @bp.get("/v1/things/<run_id>/<other>")
    @bp.doc(summary="A thing", operation_id="thing", responses=errors(404))
    @reads(RUN_ID_PARAM)
    def thing(run_id: str, other: str) -> str:
        return ""

    with pytest.raises(RuntimeError, match=r"documented \['run_id'\], in the route \['other', 'run_id'\]"):
        _with(bp).spec


def test_a_reference_to_an_unpublished_schema_is_refused() -> None:
    bp = APIBlueprint("dangling", __name__)

    @bp.get("/v1/dangling")
    @bp.doc(
        summary="Dangling",
        operation_id="dangling",
        responses={200: {"description": "x", "content": {JSON: {"schema": schema_ref("Nope")}}}},
    )
    def dangling() -> str:
        return ""

    with pytest.raises(RuntimeError, match=r"schemas nobody publishes: \['Nope'\]"):
        _with(bp).spec


def test_a_documented_route_gets_its_scope_and_parameters_and_nothing_invented() -> None:
    bp = APIBlueprint("documented", __name__)

    @bp.get("/v1/things/<run_id>")
    @requires(Scope.RUN_READ)
    @bp.output(Health, description="The thing.")
    @bp.doc(summary="Read a thing", operation_id="readThing", responses=errors(*AUTH, 404))
    @reads(RUN_ID_PARAM)
    def read(run_id: str) -> Health:
        """First line.

        Not a description: APIFlask's own descriptions are off."""
        return Health(status="ok")

    @bp.get("/v1/open")
    @bp.doc(summary="Open", operation_id="open", responses={200: {"description": "Always."}})
    def open_() -> str:
        return ""

    spec = _with(bp).spec
    assert isinstance(spec, dict)
    op = spec["paths"]["/v1/things/{run_id}"]["get"]
    assert op["x-required-scope"] == "run:read"
    assert op["description"] == "Scope: `run:read`."
    assert op["parameters"] == [RUN_ID_PARAM]
    assert set(op["responses"]) == {"200", "400", "401", "403", "404", "429"}
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == schema_ref(Health)
    public = spec["paths"]["/v1/open"]["get"]
    assert public["security"] == [] and "x-required-scope" not in public
    assert public["responses"] == {"200": {"description": "Always."}}
    assert "HTTPError" not in spec["components"]["schemas"]  # no error schema of APIFlask's
    assert "ValidationError" not in spec["components"]["schemas"]
