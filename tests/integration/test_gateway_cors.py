"""CORS: off by default, exact configured origins only, preflights answered for them alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.datastructures import Headers

from smithers.gateway.config import GatewayConfig
from smithers.gateway.cors import parse_origins
from smithers.shared.config import resolve_deployment
from smithers.shared.errors import InvalidInput
from tests.integration.gateway.support import KEY, Gateway, make_gateway

CONSOLE = "https://console.example.com"
OTHER = "https://evil.example.net"
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    with make_gateway(f"sqlite:///{tmp_path / 'smithers.db'}", None, cors_origins=(CONSOLE,)) as gateway:
        yield gateway


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[Gateway]:
    with make_gateway(f"sqlite:///{tmp_path / 'plain.db'}", None) as gateway:
        yield gateway


def cors_headers(headers: Headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower().startswith("access-control-")}


def test_an_allowed_origin_is_echoed_with_vary(gw: Gateway) -> None:
    # when the console's page reads runs with its token
    response = gw.client.get("/v1/runs", headers={"Origin": CONSOLE, **gw.auth("run:read")})

    # then the browser may read the answer, and caches keep origins apart
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == CONSOLE
    assert "X-Request-ID" in response.headers["Access-Control-Expose-Headers"]
    assert "Origin" in response.headers["Vary"]
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_errors_carry_the_headers_too(gw: Gateway) -> None:
    # a 401 the console must be able to read, to ask its user to sign in again
    response = gw.client.get("/v1/runs", headers={"Origin": CONSOLE})
    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] == CONSOLE


def test_a_disallowed_origin_gets_no_cors_header(gw: Gateway) -> None:
    response = gw.client.get("/v1/runs", headers={"Origin": OTHER, **gw.auth("run:read")})
    assert response.status_code == 200  # the server answers; the browser withholds it from the page
    assert cors_headers(response.headers) == {}
    assert "Origin" in response.headers["Vary"]


def test_a_preflight_is_answered_for_an_allowed_origin_only(gw: Gateway) -> None:
    # when a browser asks before a POST with an Authorization header, no token attached
    allowed = gw.client.options("/v1/runs", headers={"Origin": CONSOLE, **PREFLIGHT})
    refused = gw.client.options("/v1/runs", headers={"Origin": OTHER, **PREFLIGHT})

    # then the console's origin may send it, with its bearer token
    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == CONSOLE
    assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
    assert "authorization" in allowed.headers["Access-Control-Allow-Headers"].lower()
    assert "Access-Control-Allow-Credentials" not in allowed.headers
    assert "Origin" in allowed.headers["Vary"]
    # and another origin learns nothing that lets its page send the request
    assert cors_headers(refused.headers) == {}


def test_off_by_default(plain: Gateway) -> None:
    assert plain.svc.config.cors_origins == ()
    for response in (
        plain.client.get("/v1/runs", headers={"Origin": CONSOLE, **plain.auth("run:read")}),
        plain.client.options("/v1/runs", headers={"Origin": CONSOLE, **PREFLIGHT}),
    ):
        assert cors_headers(response.headers) == {}
        assert "Origin" not in response.headers.get("Vary", "")


def test_origins_from_the_environment(tmp_path: Path) -> None:
    env = {
        "SMITHERS_DATA_DIR": str(tmp_path),
        "SMITHERS_JWT_SECRET": KEY,
        "SMITHERS_CORS_ORIGINS": f" {CONSOLE}, http://localhost:5173 ,{CONSOLE}",
    }
    config = GatewayConfig.from_env(env, resolve_deployment(env))
    assert config.cors_origins == (CONSOLE, "http://localhost:5173")
    unset = {"SMITHERS_DATA_DIR": str(tmp_path), "SMITHERS_JWT_SECRET": KEY}
    assert GatewayConfig.from_env(unset, resolve_deployment(unset)).cors_origins == ()


@pytest.mark.parametrize("bad", ["*", "console.example.com", "https://console.example.com/app", "ftp://x"])
def test_only_exact_origins_are_accepted(bad: str) -> None:
    with pytest.raises(InvalidInput, match="SMITHERS_CORS_ORIGINS"):
        parse_origins(bad)
