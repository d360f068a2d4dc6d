"""Scopes, token lifetimes and grant checks: pure functions, no services."""

from __future__ import annotations

import pytest

from smithers.shared.errors import Forbidden, InvalidInput
from smithers.shared.grants import (
    Grant,
    GrantKind,
    GrantState,
    Scope,
    TtlPolicy,
    check_subject,
    claim_values,
    effective_scopes,
    grant_problem,
    mapped_scopes,
    parse_scopes,
    require_scope,
)
from smithers.shared.settings import format_duration, parse_duration


def grant(**overrides: object) -> Grant:
    base: dict[str, object] = {
        "jti": "j1",
        "subject": "alice",
        "scopes": (Scope.RUN_READ, Scope.RUN_WRITE),
        "kind": GrantKind.PERSON,
        "issuer": "cli",
        "issued_at": 1000.0,
        "expires_at": 1900.0,
    }
    base.update(overrides)
    return Grant(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90s", 90),
        ("15m", 900),
        ("12h", 43200),
        ("30d", 2592000),
        ("2w", 1209600),
        (" 1.5h ", 5400),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "15 minutes", "-5m", "0", "0.1s", "1y"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_duration(text, "--ttl")


def test_format_duration() -> None:
    assert [format_duration(s) for s in (900, 86400, 90, 3600 * 12, 604800)] == [
        "15m",
        "1d",
        "90s",
        "12h",
        "1w",
    ]


def test_parse_scopes_sorts_dedups_and_names_the_unknown() -> None:
    assert parse_scopes("run:write, run:read,run:write") == (Scope.RUN_READ, Scope.RUN_WRITE)
    assert parse_scopes(["admin"]) == (Scope.ADMIN,)
    with pytest.raises(InvalidInput, match="unknown scope 'run:delete'"):
        parse_scopes("run:read,run:delete")
    with pytest.raises(InvalidInput, match="at least one scope"):
        parse_scopes(" , ")


def test_subjects() -> None:
    assert check_subject("dana@example.com") == "dana@example.com"
    for bad in ("", " alice", "a" * 200, "al ice", "-x", "alice\n"):
        with pytest.raises(InvalidInput):
            check_subject(bad)


def test_ttl_policy_defaults_and_ceilings() -> None:
    policy = TtlPolicy()
    assert policy.ttl(GrantKind.PERSON, None) == 900  # a short default for people
    assert policy.ttl(GrantKind.AUTOMATION, None) == 86400
    assert policy.ttl(GrantKind.AUTOMATION, 30 * 86400) == 30 * 86400
    with pytest.raises(InvalidInput, match="a person token may live at most 12h"):
        policy.ttl(GrantKind.PERSON, 13 * 3600)
    with pytest.raises(InvalidInput, match="at most 30d"):
        policy.ttl(GrantKind.AUTOMATION, 31 * 86400)
    with pytest.raises(InvalidInput):
        policy.ttl(GrantKind.PERSON, 0)


def test_ttl_policy_from_env() -> None:
    policy = TtlPolicy.from_env(
        {"SMITHERS_TOKEN_TTL_PERSON_DEFAULT": "5m", "SMITHERS_TOKEN_TTL_AUTOMATION_MAX": "7d"}
    )
    assert (policy.person_default_s, policy.automation_max_s) == (300, 7 * 86400)
    with pytest.raises(InvalidInput):
        TtlPolicy.from_env({"SMITHERS_TOKEN_TTL_PERSON_DEFAULT": "1d", "SMITHERS_TOKEN_TTL_PERSON_MAX": "1h"})


def test_grant_state_revoked_wins_over_expired() -> None:
    assert grant().state(1500) is GrantState.ACTIVE
    assert grant().state(1900) is GrantState.EXPIRED
    assert grant(revoked_at=1200.0).state(1500) is GrantState.REVOKED
    assert grant(revoked_at=1200.0).state(5000) is GrantState.REVOKED


def test_grant_problem() -> None:
    assert grant_problem(grant(), "alice", 1500) is None
    assert grant_problem(None, "alice", 1500) == "token is not a known grant"
    assert grant_problem(grant(), "mallory", 1500) == "token subject does not match its grant"
    assert grant_problem(grant(), "alice", 2000) == "token expired"
    assert grant_problem(grant(revoked_at=1.0), "alice", 1500) == "token revoked"


def test_effective_scopes_need_both_the_row_and_the_token() -> None:
    row = grant(scopes=(Scope.RUN_READ, Scope.RUN_WRITE))
    assert effective_scopes(row, ["run:read", "admin"]) == {Scope.RUN_READ}
    assert effective_scopes(row, []) == frozenset()


def test_no_scope_implies_another() -> None:
    require_scope({Scope.RUN_WRITE}, Scope.RUN_WRITE)
    for granted, needed in [
        ({Scope.RUN_WRITE}, Scope.APPROVAL_SUBMIT),  # launching does not approve
        ({Scope.APPROVAL_SUBMIT}, Scope.RUN_WRITE),  # approving does not launch
        ({Scope.ADMIN}, Scope.RUN_WRITE),
        ({Scope.RUN_WRITE}, Scope.RUN_READ),
    ]:
        with pytest.raises(Forbidden, match=needed.value):
            require_scope(granted, needed)


def test_grant_json_never_holds_a_token() -> None:
    body = grant().to_json(1500)
    assert body["state"] == "active" and body["scopes"] == ["run:read", "run:write"]
    assert "token" not in body


def test_an_automation_grant_carries_admin_or_approval_submit_only_when_allowed() -> None:
    policy = TtlPolicy()
    policy.check_kind(GrantKind.PERSON, tuple(Scope))  # a person may hold anything
    policy.check_kind(GrantKind.AUTOMATION, (Scope.RUN_READ, Scope.RUN_WRITE, Scope.APPROVAL_READ))
    for scope in (Scope.ADMIN, Scope.APPROVAL_SUBMIT):
        with pytest.raises(InvalidInput, match=f"may not carry '{scope.value}'"):
            policy.check_kind(GrantKind.AUTOMATION, (Scope.RUN_READ, scope))
    allowed = TtlPolicy(automation_privileged=frozenset({Scope.APPROVAL_SUBMIT}))
    allowed.check_kind(GrantKind.AUTOMATION, (Scope.APPROVAL_SUBMIT,))
    with pytest.raises(InvalidInput, match="may not carry 'admin'"):
        allowed.check_kind(GrantKind.AUTOMATION, (Scope.ADMIN, Scope.APPROVAL_SUBMIT))
    assert (policy.max_ttl(GrantKind.PERSON), policy.max_ttl(GrantKind.AUTOMATION)) == (12 * 3600, 30 * 86400)


def test_a_claim_maps_to_the_union_of_its_values_scopes() -> None:
    mapping = {
        "viewers": (Scope.RUN_READ,),
        "approvers": (Scope.APPROVAL_READ, Scope.APPROVAL_SUBMIT),
    }
    assert mapped_scopes(["viewers", "approvers", "other"], mapping) == {
        Scope.RUN_READ,
        Scope.APPROVAL_READ,
        Scope.APPROVAL_SUBMIT,
    }
    assert mapped_scopes("approvers  viewers", mapping) == {
        Scope.RUN_READ,
        Scope.APPROVAL_READ,
        Scope.APPROVAL_SUBMIT,
    }
    assert mapped_scopes(["Viewers"], mapping) == frozenset()  # exact values only
    assert mapped_scopes({"viewers": True}, mapping) == frozenset()  # neither list nor string
    assert mapped_scopes(None, mapping) == frozenset()
    assert mapped_scopes([1, None, ["viewers"], "viewers"], mapping) == {Scope.RUN_READ}
    # bounded: only the first 256 values count, and a value over 256 characters never matches
    assert mapped_scopes(["x"] * 256 + ["viewers"], mapping) == frozenset()
    assert claim_values(["a" * 257, "b"]) == ["b"]
