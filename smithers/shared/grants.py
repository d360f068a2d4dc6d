"""Scoped grants, pure: scopes, token lifetimes and the checks made on every request.

A grant is what a bearer token stands for: a subject, its scopes and an expiry, kept
as a row (by ``jti``) so it can be listed, audited and revoked. Nothing here does I/O;
the rows live in :mod:`smithers.shared.store.grants` and the tokens are minted by the gateway.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from smithers.shared import settings
from smithers.shared.errors import Forbidden, InvalidInput
from smithers.shared.settings import format_duration


class Scope(StrEnum):
    """What a grant allows. Launch and approval are separate on purpose."""

    RUN_READ = "run:read"
    RUN_WRITE = "run:write"
    APPROVAL_READ = "approval:read"
    APPROVAL_SUBMIT = "approval:submit"
    ADMIN = "admin"


class GrantKind(StrEnum):
    """Who holds a grant: a person (short lifetimes) or automation (bounded longer)."""

    PERSON = "person"
    AUTOMATION = "automation"


class GrantState(StrEnum):
    """Whether a grant's token is accepted now."""

    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


TTL_LIMIT_S = 365 * 86400  # the most any kind's maximum may be (the documented bound of ttl_s)
SUBJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:+-]{0,127}$")
# what a long-lived automation grant carries only when configured to
PRIVILEGED = frozenset({Scope.ADMIN, Scope.APPROVAL_SUBMIT})
MAX_CLAIM_VALUES = 256  # of a groups/roles claim, the values looked at
MAX_CLAIM_VALUE_CHARS = 256


@dataclass(frozen=True)
class TtlPolicy:
    """The grant policy of each kind: token lifetimes in seconds (a short default and a
    ceiling for people, longer for automation), and which privileged scopes
    (:data:`PRIVILEGED`) an automation grant may carry (none unless configured)."""

    person_default_s: int = settings.TOKEN_TTL_PERSON_DEFAULT.default
    person_max_s: int = settings.TOKEN_TTL_PERSON_MAX.default
    automation_default_s: int = settings.TOKEN_TTL_AUTOMATION_DEFAULT.default
    automation_max_s: int = settings.TOKEN_TTL_AUTOMATION_MAX.default
    automation_privileged: frozenset[Scope] = frozenset()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TtlPolicy:
        """Read SMITHERS_TOKEN_TTL_{PERSON,AUTOMATION}_{DEFAULT,MAX} (durations: 15m, 30d)
        and SMITHERS_TOKEN_AUTOMATION_PRIVILEGED_SCOPES."""
        privileged = settings.TOKEN_AUTOMATION_PRIVILEGED.read(env)
        allowed = frozenset(parse_scopes(privileged)) if privileged.strip() else frozenset()
        if not allowed <= PRIVILEGED:
            raise InvalidInput(
                "SMITHERS_TOKEN_AUTOMATION_PRIVILEGED_SCOPES names only admin and approval:submit"
                " (every other scope is allowed anyway)"
            )
        policy = cls(
            person_default_s=settings.TOKEN_TTL_PERSON_DEFAULT.read(env),
            person_max_s=settings.TOKEN_TTL_PERSON_MAX.read(env),
            automation_default_s=settings.TOKEN_TTL_AUTOMATION_DEFAULT.read(env),
            automation_max_s=settings.TOKEN_TTL_AUTOMATION_MAX.read(env),
            automation_privileged=allowed,
        )
        if max(policy.person_max_s, policy.automation_max_s) > TTL_LIMIT_S:
            raise InvalidInput(f"SMITHERS_TOKEN_TTL_*_MAX may be at most {TTL_LIMIT_S} seconds (365 days)")
        if policy.person_default_s > policy.person_max_s:
            raise InvalidInput("SMITHERS_TOKEN_TTL_PERSON_DEFAULT is above SMITHERS_TOKEN_TTL_PERSON_MAX")
        if policy.automation_default_s > policy.automation_max_s:
            raise InvalidInput(
                "SMITHERS_TOKEN_TTL_AUTOMATION_DEFAULT is above SMITHERS_TOKEN_TTL_AUTOMATION_MAX"
            )
        return policy

    def ttl(self, kind: GrantKind, requested_s: float | None) -> int:
        """The lifetime to grant: the kind's default, or ``requested_s`` if within its maximum."""
        default, ceiling = (
            (self.person_default_s, self.person_max_s)
            if kind is GrantKind.PERSON
            else (self.automation_default_s, self.automation_max_s)
        )
        if requested_s is None:
            return default
        if requested_s < 1:
            raise InvalidInput("a token lifetime must be at least 1 second")
        if requested_s > ceiling:
            raise InvalidInput(
                f"a {kind.value} token may live at most {format_duration(ceiling)},"
                f" not {format_duration(int(requested_s))}"
            )
        return int(requested_s)

    def max_ttl(self, kind: GrantKind) -> int:
        """The longest a grant of ``kind`` may live, in seconds."""
        return self.person_max_s if kind is GrantKind.PERSON else self.automation_max_s

    def check_kind(self, kind: GrantKind, scopes: Iterable[Scope]) -> None:
        """Raise InvalidInput when an automation grant would carry a privileged scope
        (``admin``, ``approval:submit``) that SMITHERS_TOKEN_AUTOMATION_PRIVILEGED_SCOPES
        does not allow. A person's grant may carry any scope: its lifetime is short."""
        if kind is not GrantKind.AUTOMATION:
            return
        refused = sorted(s.value for s in set(scopes) & PRIVILEGED if s not in self.automation_privileged)
        if refused:
            raise InvalidInput(
                f"an automation grant may not carry {refused[0]!r} unless"
                " SMITHERS_TOKEN_AUTOMATION_PRIVILEGED_SCOPES allows it"
            )


@dataclass(frozen=True)
class Grant:
    """A grant row: what one token (``jti``) allows, for whom, and until when."""

    jti: str
    subject: str
    scopes: tuple[Scope, ...]
    kind: GrantKind
    issuer: str
    issued_at: float
    expires_at: float
    revoked_at: float | None = None
    revoked_by: str | None = None
    note: str | None = None

    def state(self, now: float) -> GrantState:
        """Revoked wins over expired; otherwise active until ``expires_at``."""
        if self.revoked_at is not None:
            return GrantState.REVOKED
        if now >= self.expires_at:
            return GrantState.EXPIRED
        return GrantState.ACTIVE

    def to_json(self, now: float) -> dict[str, object]:
        """A JSON-ready dict with the state at ``now`` (never the token itself)."""
        return {
            "jti": self.jti,
            "subject": self.subject,
            "scopes": [s.value for s in self.scopes],
            "kind": self.kind.value,
            "issuer": self.issuer,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "revoked_by": self.revoked_by,
            "note": self.note,
            "state": self.state(now).value,
        }


def parse_scopes(value: str | Iterable[str]) -> tuple[Scope, ...]:
    """Scopes from ``"a,b"`` or a list: known, at least one, sorted and deduplicated."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = {str(item).strip() for item in items if str(item).strip()}
    if not names:
        raise InvalidInput("a grant needs at least one scope")
    known = {s.value for s in Scope}
    unknown = sorted(names - known)
    if unknown:
        raise InvalidInput(f"unknown scope {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return tuple(sorted(Scope(n) for n in names))


def check_subject(subject: str) -> str:
    """A subject is 1-128 characters of letters, digits and ``_ . @ : + -``."""
    if not isinstance(subject, str) or not SUBJECT.fullmatch(subject):
        raise InvalidInput(f"subject {subject!r} must match {SUBJECT.pattern}")
    return subject


def effective_scopes(grant: Grant, claimed: Iterable[str]) -> frozenset[Scope]:
    """The scopes a request may use: those in both the grant row and the token."""
    claimed_set = {str(c) for c in claimed}
    return frozenset(s for s in grant.scopes if s.value in claimed_set)


def grant_problem(grant: Grant | None, subject: str, now: float) -> str | None:
    """Why a token naming this grant and ``subject`` is refused now, or None if accepted."""
    if grant is None:
        return "token is not a known grant"
    if grant.subject != subject:
        return "token subject does not match its grant"
    state = grant.state(now)
    if state is not GrantState.ACTIVE:
        return f"token {state.value}"
    return None


def require_scope(granted: Iterable[Scope], needed: Scope) -> None:
    """Raise Forbidden unless ``needed`` is granted. No scope implies another:
    ``admin`` does not launch or approve, ``run:write`` does not approve."""
    if needed not in set(granted):
        raise Forbidden(f"this action needs the scope {needed.value!r}")


def claim_values(value: object) -> list[str]:
    """The values of a groups/roles claim: a list of strings, or one string of values
    separated by spaces (as OAuth's ``scope``); at most :data:`MAX_CLAIM_VALUES` of them,
    each at most :data:`MAX_CLAIM_VALUE_CHARS` characters (longer ones never match)."""
    if isinstance(value, str):
        items: list[object] = list(value.split())
    elif isinstance(value, list):
        items = list(value)
    else:
        return []
    return [v for v in items[:MAX_CLAIM_VALUES] if isinstance(v, str) and len(v) <= MAX_CLAIM_VALUE_CHARS]


def mapped_scopes(value: object, mapping: Mapping[str, Iterable[Scope]]) -> frozenset[Scope]:
    """The scopes a claim's values map to: the union of ``mapping[v]`` for each value ``v``
    (an unmapped value grants nothing)."""
    found: set[Scope] = set()
    for item in claim_values(value):
        found.update(mapping.get(item, ()))
    return frozenset(found)
