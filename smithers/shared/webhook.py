"""Signed control-plane webhooks, pure: the signature check and the change a delivery asks for.

Identity providers and billing systems sign their webhooks the way Standard Webhooks
(standardwebhooks.com) describes, and so do the deliveries the gateway accepts at
``POST /v1/control/idp`` and ``POST /v1/control/billing``: three headers,

- ``webhook-id``: the delivery's id, the same on every retry of it;
- ``webhook-timestamp``: whole seconds since the epoch, when it was signed;
- ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, several
  separated by spaces while the sender rotates its secret.

The secret is ``whsec_<base64>``; the HMAC key is the decoded bytes. A delivery is
accepted when one of its signatures matches one of the endpoint's secrets (compared in
constant time) and its timestamp is within the tolerance of the clock; its id is then
remembered (:mod:`smithers.shared.store.webhooks`) until the timestamp leaves the
tolerance, so a replay is refused either way. The body is read only up to a bound.

A delivery is then normalized here into one :data:`Change` (record a grant, revoke one,
revoke a subject, or nothing); only that, never the payload, reaches the store.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from smithers.shared import settings
from smithers.shared.errors import Forbidden, InvalidInput, Unauthorized
from smithers.shared.grants import SUBJECT, GrantKind, Scope, check_subject, parse_scopes
from smithers.shared.redaction import redact_text

SECRET_PREFIX = "whsec_"  # noqa: S105 (the form of a secret, not one)
VERSION = "v1"
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64
MAX_SIGNATURE_HEADER = 2048  # a few rotated signatures; more is not a real sender
WEBHOOK_ID = re.compile(r"^[A-Za-z0-9_.:=+/-]{1,128}$")
TIMESTAMP = re.compile(r"^\d{1,12}$")
EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
GRANT_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")  # a grant's jti (smithers.shared.store.grants.JTI)
MAX_REASON = 500
MAX_NOTE = 1000
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class Source(StrEnum):
    """Who sends a webhook: each has its own endpoint, secrets, issuer and allowed scopes."""

    IDP = "idp"
    BILLING = "billing"

    @property
    def issuer(self) -> str:
        """The ``issuer`` of the grants its deliveries record (and the audit's actor)."""
        return f"webhook:{self.value}"


def parse_secrets(raw: str, name: str) -> tuple[bytes, ...]:
    """The HMAC keys of ``whsec_<base64>`` secrets separated by spaces or commas."""
    keys: list[bytes] = []
    for item in re.split(r"[\s,]+", raw.strip()):
        if not item:
            continue
        text = item.removeprefix(SECRET_PREFIX)
        try:
            key = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"{name}: a secret must be {SECRET_PREFIX}<base64>") from None
        if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
            raise InvalidInput(
                f"{name}: a secret must decode to {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, not {len(key)}"
            )
        keys.append(key)
    return tuple(keys)


def _scopes(raw: str, name: str) -> frozenset[Scope]:
    try:
        return frozenset(parse_scopes(raw))
    except InvalidInput as exc:
        raise InvalidInput(f"{name}: {exc.message}") from None


@dataclass(frozen=True)
class WebhookConfig:
    """The webhook endpoints' secrets (never in ``repr``), tolerance, size bound and scopes."""

    idp_secrets: tuple[bytes, ...] = field(default=(), repr=False)
    billing_secrets: tuple[bytes, ...] = field(default=(), repr=False)
    tolerance_s: int = settings.WEBHOOK_TOLERANCE.default
    max_body_bytes: int = settings.WEBHOOK_MAX_BODY.default
    idp_scopes: frozenset[Scope] = frozenset(parse_scopes(settings.WEBHOOK_IDP_SCOPES.default))
    billing_scopes: frozenset[Scope] = frozenset(parse_scopes(settings.WEBHOOK_BILLING_SCOPES.default))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WebhookConfig:
        """Read SMITHERS_WEBHOOK_*."""
        idp, billing = settings.WEBHOOK_IDP_SECRETS, settings.WEBHOOK_BILLING_SECRETS
        scopes_i, scopes_b = settings.WEBHOOK_IDP_SCOPES, settings.WEBHOOK_BILLING_SCOPES
        return cls(
            idp_secrets=parse_secrets(idp.read(env), idp.name),
            billing_secrets=parse_secrets(billing.read(env), billing.name),
            tolerance_s=settings.WEBHOOK_TOLERANCE.read(env),
            max_body_bytes=settings.WEBHOOK_MAX_BODY.read(env),
            idp_scopes=_scopes(scopes_i.read(env), scopes_i.name),
            billing_scopes=_scopes(scopes_b.read(env), scopes_b.name),
        )

    def secrets(self, source: Source) -> tuple[bytes, ...]:
        """The keys ``source``'s deliveries may be signed with (none: the endpoint is off)."""
        return self.idp_secrets if source is Source.IDP else self.billing_secrets

    def scopes(self, source: Source) -> frozenset[Scope]:
        """The scopes ``source`` may grant."""
        return self.idp_scopes if source is Source.IDP else self.billing_scopes


def sign(key: bytes, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of a delivery (what a sender puts in webhook-signature)."""
    content = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return f"{VERSION},{base64.b64encode(digest).decode()}"


@dataclass(frozen=True)
class Delivery:
    """A delivery whose signature and timestamp were accepted."""

    source: Source
    webhook_id: str
    timestamp: int


def verify(
    source: Source,
    keys: tuple[bytes, ...],
    headers: Callable[[str], str | None],
    body: bytes,
    *,
    now: float,
    tolerance_s: int,
) -> Delivery:
    """Check the three headers and the signature of ``body``; raise Unauthorized saying
    what is wrong (missing, malformed, no signature matches, stale)."""
    webhook_id, stamp, signature = (headers(h) for h in HEADERS)
    missing = [h for h, v in zip(HEADERS, (webhook_id, stamp, signature), strict=True) if not v]
    if missing or webhook_id is None or stamp is None or signature is None:
        raise Unauthorized(f"a signed webhook needs the header(s) {', '.join(missing)}")
    if not WEBHOOK_ID.fullmatch(webhook_id):
        raise Unauthorized(f"webhook-id must match {WEBHOOK_ID.pattern}")
    if not TIMESTAMP.fullmatch(stamp):
        raise Unauthorized("webhook-timestamp must be whole seconds since the epoch")
    if len(signature) > MAX_SIGNATURE_HEADER:
        raise Unauthorized(f"webhook-signature is longer than {MAX_SIGNATURE_HEADER} characters")
    timestamp = int(stamp)
    given = [part.partition(",") for part in signature.split()]
    offered = [sig.encode() for version, comma, sig in given if version == VERSION and comma]
    expected = [sign(key, webhook_id, timestamp, body).partition(",")[2].encode() for key in keys]
    if not any(hmac.compare_digest(e, o) for e in expected for o in offered):
        raise Unauthorized("no v1 signature in webhook-signature matches this endpoint's secrets")
    skew = now - timestamp
    if abs(skew) > tolerance_s:
        where = f"{int(skew)} s old" if skew > 0 else f"{int(-skew)} s ahead of the gateway's clock"
        raise Unauthorized(
            f"webhook-timestamp is {where}: deliveries are accepted within {tolerance_s} s"
            " (a stale or replayed delivery)"
        )
    return Delivery(source, webhook_id, timestamp)


# -- what a delivery asks for ---------------------------------------------------------


@dataclass(frozen=True)
class RecordGrant:
    """Write a grant (idempotent by ``jti``); ``replaces``: revoke the subject's other
    grants from the same source (a billing plan that changed)."""

    jti: str
    subject: str
    scopes: tuple[Scope, ...]
    kind: GrantKind
    expires_at: float
    issued_at: float | None = None
    note: str | None = None
    replaces: bool = False


@dataclass(frozen=True)
class RevokeGrant:
    """Revoke one grant."""

    jti: str
    reason: str | None = None


@dataclass(frozen=True)
class RevokeSubject:
    """Revoke a subject's unrevoked grants: all of them, or with ``own_only`` only those
    this source recorded."""

    subject: str
    reason: str | None = None
    own_only: bool = False


@dataclass(frozen=True)
class Ignore:
    """A type this endpoint does not act on: only its receipt is audited."""


Change = RecordGrant | RevokeGrant | RevokeSubject | Ignore


@dataclass(frozen=True)
class Event:
    """A delivery's ``type`` and its normalized change."""

    type: str
    change: Change


def parse(source: Source, value: Any, allowed: frozenset[Scope]) -> Event:
    """Normalize a delivery's JSON (``{"type", "data", "timestamp"}``): InvalidInput naming
    the field, Forbidden for a scope ``source`` may not grant. Fields not read are ignored
    and never stored."""
    if not isinstance(value, dict):
        raise InvalidInput("a webhook body must be a JSON object with type and data")
    kind = value.get("type")
    if not isinstance(kind, str) or not EVENT_TYPE.fullmatch(kind):
        raise InvalidInput(f"field 'type' must be a string matching {EVENT_TYPE.pattern}")
    handler = (IDP_TYPES if source is Source.IDP else BILLING_TYPES).get(kind)
    if handler is None:
        return Event(kind, Ignore())
    data = value.get("data")
    if not isinstance(data, dict):
        raise InvalidInput("field 'data' must be an object")
    return Event(kind, handler(_Data(data), allowed))


class _Data:
    """Typed reads of ``data``, each error naming ``data.<field>``."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    def text(self, name: str, *, required: bool = True, limit: int = 128) -> str | None:
        value = self.data.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            raise InvalidInput(f"field 'data.{name}' must be a non-empty string")
        if len(value) > limit:
            raise InvalidInput(f"field 'data.{name}' is longer than {limit} characters")
        return value

    def number(self, name: str, *, required: bool = True) -> float | None:
        value = self.data.get(name)
        if value is None and not required:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 2**40:
            raise InvalidInput(f"field 'data.{name}' must be epoch seconds (a number)")
        return float(value)

    def jti(self) -> str:
        value = self.text("grant_id")
        assert value is not None
        if not GRANT_ID.fullmatch(value):
            raise InvalidInput(f"field 'data.grant_id' must match {GRANT_ID.pattern}")
        return value

    def subject(self) -> str:
        value = self.text("subject")
        assert value is not None
        try:
            return check_subject(value)
        except InvalidInput:
            raise InvalidInput(f"field 'data.subject' must match {SUBJECT.pattern}") from None

    def scopes(self, allowed: frozenset[Scope]) -> tuple[Scope, ...]:
        value = self.data.get("scopes")
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or len(value) > 16:
            raise InvalidInput("field 'data.scopes' must be a list of scope names")
        try:
            scopes = parse_scopes(value)
        except InvalidInput as exc:
            raise InvalidInput(f"field 'data.scopes': {exc.message}") from None
        refused = sorted(s.value for s in scopes if s not in allowed)
        if refused:
            raise Forbidden(
                f"this webhook may not grant {refused[0]!r} (it may grant: {', '.join(sorted(allowed))})"
            )
        return scopes

    def kind(self, default: GrantKind) -> GrantKind:
        value = self.data.get("kind", default.value)
        if value not in {k.value for k in GrantKind}:
            raise InvalidInput(f"field 'data.kind' must be one of {', '.join(k.value for k in GrantKind)}")
        return GrantKind(value)

    def said(self, name: str, limit: int) -> str | None:
        """Free text (a reason, a note): bounded and redacted, for it is stored."""
        value = self.text(name, required=False, limit=limit)
        return None if value is None else redact_text(value)


def _grant(default_kind: GrantKind, replaces: bool) -> Callable[[_Data, frozenset[Scope]], Change]:
    def read(data: _Data, allowed: frozenset[Scope]) -> Change:
        expires = data.number("expires_at")
        assert expires is not None
        return RecordGrant(
            jti=data.jti(),
            subject=data.subject(),
            scopes=data.scopes(allowed),
            kind=data.kind(default_kind),
            expires_at=expires,
            issued_at=data.number("issued_at", required=False),
            note=data.said("note", MAX_NOTE),
            replaces=replaces,
        )

    return read


def _revoke_grant(data: _Data, _allowed: frozenset[Scope]) -> Change:
    return RevokeGrant(data.jti(), data.said("reason", MAX_REASON))


def _revoke_subject(own_only: bool) -> Callable[[_Data, frozenset[Scope]], Change]:
    def read(data: _Data, _allowed: frozenset[Scope]) -> Change:
        return RevokeSubject(data.subject(), data.said("reason", MAX_REASON), own_only)

    return read


IDP_TYPES: dict[str, Callable[[_Data, frozenset[Scope]], Change]] = {
    "grant.created": _grant(GrantKind.PERSON, replaces=False),
    "grant.revoked": _revoke_grant,
    "subject.revoked": _revoke_subject(own_only=False),
}
BILLING_TYPES: dict[str, Callable[[_Data, frozenset[Scope]], Change]] = {
    "subscription.active": _grant(GrantKind.AUTOMATION, replaces=True),
    "subscription.ended": _revoke_subject(own_only=True),
}
