"""The client's pieces without a gateway: SSE framing, error bodies as error families,
profile files (0600 whatever the umask), and the remote target of an environment."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from smithers.cli import profiles
from smithers.client.errors import ApiError, GatewayUnavailable, error_from
from smithers.client.stream import frames
from smithers.shared.errors import (
    BrokerUnavailable,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    StoreUnavailable,
)


def test_sse_lines_become_frames_and_comments() -> None:
    lines = [
        "retry: 2000",
        "",
        "id: 7",
        'data: {"a":',
        "data: 1}",
        "",
        ": keep-alive",
        "",
        "event: end",
        'data: {"reason": "terminal", "last_id": 7}',
        "",
    ]
    out = list(frames(iter(lines)))
    assert out[0] is not None and out[0].retry_ms == 2000 and not out[0].data
    assert out[1] is not None and out[1].id == "7" and out[1].data == ['{"a":', "1}"]
    assert out[2] is None  # the keep-alive
    assert out[3] is not None and out[3].event == "end"
    assert len(out) == 4


@pytest.mark.parametrize(
    ("status", "code", "family"),
    [
        (400, "invalid_input", InvalidInput),
        (403, "forbidden", Forbidden),
        (404, "unknown_workflow", NotFound),
        (503, "store_unavailable", StoreUnavailable),
        (503, "broker_unavailable", BrokerUnavailable),
    ],
)
def test_error_bodies_become_their_family_with_the_gateways_code(
    status: int, code: str, family: type[Exception]
) -> None:
    body = f'{{"error": {{"code": "{code}", "message": "m {status}"}}}}'.encode()
    exc = error_from(status, body)
    assert isinstance(exc, family) and exc.code == code and exc.message == f"m {status}"
    assert exc.http_status == status


def test_odd_answers_still_say_what_happened() -> None:
    limited = error_from(429, b'{"error": {"code": "rate_limited", "message": "slow"}}', "17")
    assert isinstance(limited, RateLimited) and limited.retry_after_s == 17
    html = error_from(502, b"<html>bad gateway</html>")
    assert isinstance(html, GatewayUnavailable) and "HTTP 502" in html.message
    other = error_from(405, b'{"error": {"code": "method_not_allowed", "message": "no"}}')
    assert isinstance(other, ApiError) and other.http_status == 405


def test_profiles_are_written_0600_whatever_the_umask(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    old = os.umask(0)
    try:
        path = profiles.save(env, profiles.Profile("prod", "https://gw.example", "tok-1", "ada"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    loaded = profiles.load(env, name="prod")
    assert loaded is not None and loaded.token == "tok-1" and loaded.url == "https://gw.example"
    assert profiles.load(env, url="https://gw.example/") == loaded  # by URL, trailing slash or not
    with pytest.raises(InvalidInput, match="profile name"):
        profiles.save(env, profiles.Profile("../evil", "https://x", "t"))
    assert not list(tmp_path.rglob("*.tmp"))


def test_the_remote_target_of_an_environment(tmp_path: Path) -> None:
    assert profiles.target({}) is None  # local mode
    env = {"XDG_CONFIG_HOME": str(tmp_path)}
    direct = profiles.target({**env, "SMITHERS_GATEWAY_URL": "https://gw", "SMITHERS_TOKEN": "t"})
    assert direct == profiles.Target("https://gw", "t", None)
    profiles.save(env, profiles.Profile("prod", "https://gw", "from-file"))
    by_name = profiles.target({**env, "SMITHERS_PROFILE": "prod"})
    assert by_name == profiles.Target("https://gw", "from-file", "prod")
    by_url = profiles.target({**env, "SMITHERS_GATEWAY_URL": "https://gw"})
    assert by_url is not None and by_url.token == "from-file"
    elsewhere = profiles.target({**env, "SMITHERS_GATEWAY_URL": "https://other"})
    assert elsewhere is not None and elsewhere.token is None
