"""The client's pieces without a gateway: SSE framing, error bodies as error families,
profile files (0600 whatever the umask), and the remote target of an environment."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from smithers.cli import profiles
from smithers.client.errors import ApiError, GatewayUnavailable, error_from
from smithers.client.stream import Following, frames
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


def _event_lines(seq: int) -> list[str]:
    data = {
        "run_id": "r",
        "seq": seq,
        "feed_id": seq,
        "type": "node.progress",
        "node_id": None,
        "iteration": None,
        "attempt_id": None,
        "payload": {},
        "created_at": 0.0,
    }
    return [f"id: {seq}", f"data: {json.dumps(data)}", ""]


def test_following_drops_a_duplicate_and_reconnects_from_the_last_seq_on_a_gap() -> None:
    # given a follower of a run that already saw seq 1
    follow = Following("/v1/runs/r/events", after=1)
    headers, _ = follow.request()
    assert headers["Last-Event-ID"] == "1" and follow.connects == 1
    # when the connection sends 1 again, then 2, then skips to 4
    got = [follow.feed(line) for line in [*_event_lines(1), *_event_lines(2)]]
    # then 1 is dropped, 2 comes out, and 4 makes it reconnect from 2
    assert [e.seq for e in got if e is not None] == [2] and follow.last == 2
    with pytest.raises(RuntimeError, match="seq 4 after 2"):
        for line in _event_lines(4):
            follow.feed(line)
    assert follow.request()[0]["Last-Event-ID"] == "2"
    # and a final end frame ends it; a timeout end only closes this connection
    for line in ["event: end", 'data: {"reason": "timeout", "last_id": 2}', ""]:
        follow.feed(line)
    assert follow.closing and follow.end is None
    follow.request()
    for line in ["event: end", 'data: {"reason": "terminal", "last_id": 2}', ""]:
        follow.feed(line)
    assert follow.closing and follow.end is not None and follow.end.reason == "terminal"


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
