"""The OpenAPI document matches the code: every route documented with its scope,
schemathesis finds no 5xx and no undocumented status, and docs/api.md is up to date."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
import sqlalchemy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from smithers.gateway.app import required_scope
from smithers.gateway.openapi import document, render_markdown
from smithers.shared.store import schema as s
from smithers.shared.webhook import WebhookConfig, parse_secrets
from tests.integration.gateway.support import ALL_SCOPES, ROOT, Gateway, make_gateway, module_database

pytestmark = pytest.mark.timeout(300)
# the signed webhooks are on, so the fuzzer meets their signature check (it cannot sign)
HOOKS = WebhookConfig(
    idp_secrets=parse_secrets("whsec_" + base64.b64encode(b"i" * 32).decode(), "idp"),
    billing_secrets=parse_secrets("whsec_" + base64.b64encode(b"b" * 32).decode(), "billing"),
)
API_MD = ROOT / "docs" / "api.md"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gw(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, redis_server: str
) -> Iterator[Gateway]:
    pg = request.getfixturevalue("pg_admin") if request.param == "postgres" else None
    # the fuzzer's many unauthenticated probes (ignored_auth) must not get its address limited
    with (
        module_database(request.param, tmp_path_factory.mktemp("gw-openapi"), pg) as url,
        make_gateway(
            url, redis_server, sse_max_s=0.2, sse_keepalive_s=0.1, auth_failures=10**6, webhooks=HOOKS
        ) as gateway,
    ):
        run_id = gateway.launch("t-approval")
        gateway.seed_approval(run_id)
        gateway.launch("t-chain", {"text": "é\u2028", "n": 2**62})
        yield gateway


@pytest.fixture(scope="module")
def real_ids(gw: Gateway) -> list[str]:
    """Ids of runs that exist, so the fuzzer reaches past the 404s."""
    with gw.store.read() as conn:
        return [str(r) for r in conn.execute(sqlalchemy.select(s.runs.c.run_id)).scalars()]


@pytest.fixture(scope="module")
def token(gw: Gateway) -> str:
    return gw.token(ALL_SCOPES, subject="fuzzer", ttl_s=3600)


@pytest.fixture(scope="module")
def api(gw: Gateway, token: str) -> Any:
    schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", gw.app)

    class Bearer:
        """The token through schemathesis's auth hook, so that it knows the header is ours:
        a negative case whose mutation was a missing Authorization header is not counted as
        invalid data accepted once the header is set."""

        def get(self, case: Any, ctx: Any) -> str:
            return token

        def set(self, case: Any, data: str, ctx: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    schema.auth()(Bearer)
    return schema


def _flask_path(rule: str) -> str:
    return rule.replace("<", "{").replace(">", "}").replace("{path:", "{")


def test_every_route_is_documented_with_its_scope(gw: Gateway) -> None:
    doc = document()
    documented = {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method != "parameters"
    }
    routes = {
        (method, _flask_path(rule.rule))
        for rule in gw.app.url_map.iter_rules()
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS") and not rule.rule.startswith("/static")
    }
    assert routes == documented
    for rule in gw.app.url_map.iter_rules():
        if rule.rule.startswith("/static"):
            continue
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            op = doc["paths"][_flask_path(rule.rule)][method.lower()]
            assert op.get("x-required-scope") == required_scope(gw.app, rule.endpoint), rule.rule
            if op.get("x-required-scope") == "any":  # any valid credential: never a missing scope
                assert "401" in op["responses"], rule.rule
            elif op.get("x-required-scope"):
                assert {"401", "403"} <= set(op["responses"]), rule.rule
            else:
                assert op["security"] == []


def test_the_served_document_is_the_document(gw: Gateway) -> None:
    assert gw.client.get("/v1/openapi.json").get_json() == document()


def test_api_md_is_generated_from_the_document() -> None:
    expected = render_markdown(document())
    assert API_MD.read_text() == expected, (
        "docs/api.md is stale: run `python -m smithers.gateway.openapi > docs/api.md`"
    )


OPERATIONS = [
    (path, method.upper())
    for path, item in document()["paths"].items()
    for method in item
    if method != "parameters"
]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("path", "method"), OPERATIONS)
def test_fuzz_no_server_error_no_undocumented_status(
    api: Any, token: str, real_ids: list[str], path: str, method: str, mode: GenerationMode
) -> None:
    # NUL and any Unicode in generated strings (allow_x00, codec utf-8: schemathesis's
    # defaults, set here so they stay on), and half the positive cases aimed at real runs
    api.config.generation.update(allow_x00=True, codec="utf-8")
    operation = api[path][method]

    def aim(pair: tuple[Any, str | None]) -> Any:
        case, run_id = pair
        # (positive cases only: a negative case's invalid id must stay invalid)
        if (
            mode is GenerationMode.POSITIVE
            and run_id is not None
            and "run_id" in (case.path_parameters or {})
        ):
            case.path_parameters["run_id"] = run_id
        return case

    cases = st.tuples(operation.as_strategy(mode), st.one_of(st.none(), st.sampled_from(real_ids))).map(aim)

    @given(case=cases)
    @settings(
        max_examples=15,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(checks=CHECKS)

    try:
        run()
    except Unsatisfiable:
        pytest.skip(f"no {mode.value} data can be generated for {method} {path}")
