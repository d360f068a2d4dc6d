"""The control plane: grant rows and audit events.

Every token is a ``grants`` row (by ``jti``); issuing, recording and revoking one are
each one transaction with its audit entry. Identity-provider assertions and billing
webhooks never reach the store as such: a bridge normalizes them and calls
:class:`ControlPlaneStore` (``record_grant``, ``revoke_subject``, ``record_event``).
The token signing key is never stored here.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Row, bindparam, select, update
from sqlalchemy.exc import IntegrityError

from smithers.shared.errors import Conflict, InvalidInput, NotFound
from smithers.shared.grants import Grant, GrantKind, GrantState, Scope, TtlPolicy, check_subject, parse_scopes
from smithers.shared.store import schema as s
from smithers.shared.store.audit import AuditRecord, audit_entries
from smithers.shared.store.store import Store
from smithers.shared.store.tx import Tx
from smithers.shared.ttlcache import TtlCache

ACTION = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}$")
JTI = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
ISSUER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,127}$")
MAX_NOTE = 1000
CACHE_MAX = 10_000  # grant rows ControlPlaneStore.cached keeps (then it starts again)
_BY_JTI = select(s.grants).where(s.grants.c.jti == bindparam("jti"))


def grant_record(row: Row[Any]) -> Grant:
    """Map a ``grants`` row."""
    m = row._mapping
    return Grant(
        jti=m["jti"],
        subject=m["subject"],
        scopes=tuple(Scope(v) for v in m["scopes"]),
        kind=GrantKind(m["kind"]),
        issuer=m["issuer"],
        issued_at=m["issued_at"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
        revoked_by=m["revoked_by"],
        note=m["note"],
    )


def _check(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidInput(f"{what} {value!r} must match {pattern.pattern}")
    return value


def _note(note: str | None) -> str | None:
    if note is not None and len(note) > MAX_NOTE:
        raise InvalidInput(f"a grant note is at most {MAX_NOTE} characters")
    return note


class ControlPlaneStore:
    """Grants and audit events on a :class:`Store`; lifetimes bounded by a TtlPolicy."""

    def __init__(self, store: Store, policy: TtlPolicy | None = None, *, cache_s: float = 0.0) -> None:
        self.store = store
        self.policy = policy or TtlPolicy()
        # cached(): grant rows read within cache_s
        self.cache_s = cache_s
        self._cache: TtlCache[str, Grant] = TtlCache(cache_s, CACHE_MAX)

    # -- grants ---------------------------------------------------------------------

    def issue(
        self,
        *,
        subject: str,
        scopes: str | Iterable[str],
        kind: GrantKind = GrantKind.PERSON,
        ttl_s: float | None = None,
        issuer: str,
        actor: str,
        note: str | None = None,
    ) -> Grant:
        """Create a grant with a fresh ``jti``; the row and ``grant.issued`` are one transaction.

        The lifetime is the kind's default, or ``ttl_s`` if within the kind's maximum; an
        automation grant carries a privileged scope only where the policy allows it.
        """
        now = time.time()
        issued = float(int(now))
        ttl = self.policy.ttl(kind, ttl_s)
        parsed = parse_scopes(scopes)
        self.policy.check_kind(kind, parsed)
        grant = Grant(
            jti=uuid.uuid4().hex,
            subject=check_subject(subject),
            scopes=parsed,
            kind=kind,
            issuer=_check(ISSUER, issuer, "issuer"),
            issued_at=issued,
            expires_at=issued + ttl,
            note=_note(note),
        )
        with self.store.write() as tx:
            self._insert(tx, grant)
            self._audit_grant(tx, "grant.issued", grant, actor)
        return grant

    def record_grant(
        self,
        *,
        jti: str,
        subject: str,
        scopes: str | Iterable[str],
        kind: GrantKind,
        issuer: str,
        expires_at: float,
        actor: str,
        issued_at: float | None = None,
        note: str | None = None,
    ) -> tuple[Grant, bool]:
        """Write a grant normalized from an outside identity provider or billing system.

        Idempotent by ``jti``: the same grant again returns ``(grant, False)``, also when
        two writers record it at once; the same ``jti`` with other content is a Conflict.
        The lifetime and the scopes must fit the policy of ``kind``. The row and its
        ``grant.recorded`` audit entry are one transaction.
        """
        grant = outside_grant(
            self.policy,
            jti=jti,
            subject=subject,
            scopes=scopes,
            kind=kind,
            issuer=issuer,
            expires_at=expires_at,
            issued_at=issued_at,
            note=note,
        )
        try:
            return self._record(grant, actor)
        except IntegrityError:  # another writer inserted this jti after our read: compare with it
            return self._record(grant, actor)

    def _record(self, grant: Grant, actor: str) -> tuple[Grant, bool]:
        try:
            with self.store.write() as tx:
                return record_grant_in(tx, grant, actor)
        finally:
            self.forget()

    def revoke(self, jti: str, *, actor: str, reason: str | None = None) -> Grant:
        """Revoke a grant at once; revoking twice keeps the first revocation.

        The update and its ``grant.revoked`` audit entry are one transaction.
        """
        try:
            with self.store.write() as tx:
                return revoke_in(tx, jti, actor=actor, reason=reason)
        finally:
            self.forget()

    def revoke_subject(self, subject: str, *, actor: str, reason: str | None = None) -> list[str]:
        """Revoke every unrevoked grant of ``subject`` (deprovisioned user, lapsed plan).

        Returns the revoked ``jti``s; all of them and their audit entries are one transaction.
        """
        try:
            with self.store.write() as tx:
                return revoke_subject_in(tx, subject, actor=actor, reason=reason)
        finally:
            self.forget()

    def cached(self, jti: str) -> Grant | None:
        """:meth:`get`, reusing a row read less than ``cache_s`` ago: what a token check
        reads on every request. A change through this object (a revocation, an issue)
        applies at once; one made elsewhere within ``cache_s``. Expiry is judged by the
        caller against the clock, so a cached grant still expires on time."""
        if self.cache_s <= 0:
            return self.get(jti)
        hit = self._cache.fresh(jti)
        if hit is not None:
            return hit
        grant = self.get(jti)
        if grant is None:  # not cached: a grant recorded elsewhere is usable at once
            self._cache.drop(jti)
            return None
        self._cache.put(jti, grant)
        return grant

    def forget(self) -> None:
        """Drop every cached grant row (after a change to grants through this object)."""
        self._cache.clear()

    def get(self, jti: str) -> Grant | None:
        """The grant, or None (read on every request: built once, like the engine's hot paths)."""
        with self.store.read() as conn:
            row = conn.execute(_BY_JTI, {"jti": jti}).first()
        return None if row is None else grant_record(row)

    def grants(
        self, *, subject: str | None = None, active_only: bool = False, limit: int = 500
    ) -> list[Grant]:
        """Grants, newest first; ``active_only`` leaves out revoked and expired ones."""
        g = s.grants
        query = select(g)
        if subject is not None:
            query = query.where(g.c.subject == subject)
        if active_only:
            query = query.where(g.c.revoked_at.is_(None), g.c.expires_at > time.time())
        with self.store.read() as conn:
            rows = conn.execute(query.order_by(g.c.issued_at.desc(), g.c.jti).limit(limit)).all()
        return [grant_record(r) for r in rows]

    def state(self, jti: str) -> GrantState | None:
        """The grant's state now, or None when there is no such grant."""
        grant = self.get(jti)
        return None if grant is None else grant.state(time.time())

    # -- audit ----------------------------------------------------------------------

    def record_event(
        self,
        action: str,
        *,
        actor: str | None,
        target_type: str | None = None,
        target_id: str | None = None,
        run_id: str | None = None,
        detail: dict[str, Any] | None = None,
        dedupe_key: str | None = None,
    ) -> None:
        """Append one audit event (a denied request, a billing webhook, an IdP login...).

        ``detail`` is redacted before it is written. ``dedupe_key``: count one more on
        the row with that key instead of adding one (:meth:`Tx.audit`).
        """
        _check(ACTION, action, "audit action")
        with self.store.write() as tx:
            tx.audit(
                action,
                actor=actor[:128] if actor else actor,
                target_type=target_type,
                target_id=target_id[:128] if target_id else target_id,
                run_id=run_id,
                detail=detail,
                dedupe_key=dedupe_key,
            )

    def audit_log(
        self,
        *,
        action: str | None = None,
        run_id: str | None = None,
        target_id: str | None = None,
        after_id: int = 0,
        limit: int = 200,
    ) -> list[AuditRecord]:
        """Audit rows after ``after_id``, oldest first."""
        with self.store.read() as conn:
            return audit_entries(
                conn, action=action, run_id=run_id, target_id=target_id, after_id=after_id, limit=limit
            )

    # -- helpers --------------------------------------------------------------------

    @staticmethod
    def _insert(tx: Tx, grant: Grant) -> None:
        tx.conn.execute(
            s.grants.insert().values(
                jti=grant.jti,
                subject=grant.subject,
                scopes=[sc.value for sc in grant.scopes],
                kind=grant.kind.value,
                issuer=grant.issuer,
                issued_at=grant.issued_at,
                expires_at=grant.expires_at,
                note=grant.note,
            )
        )

    @staticmethod
    def _audit_grant(tx: Tx, action: str, grant: Grant, actor: str) -> None:
        tx.audit(
            action,
            actor=actor,
            target_type="grant",
            target_id=grant.jti,
            detail={
                "subject": grant.subject,
                "scopes": [sc.value for sc in grant.scopes],
                "kind": grant.kind.value,
                "issuer": grant.issuer,
                "expires_at": grant.expires_at,
                "ttl_s": grant.expires_at - grant.issued_at,
            },
        )


# -- the same, inside a caller's transaction (a webhook's delivery and its change) ---------


def outside_grant(
    policy: TtlPolicy,
    *,
    jti: str,
    subject: str,
    scopes: str | Iterable[str],
    kind: GrantKind,
    issuer: str,
    expires_at: float,
    issued_at: float | None = None,
    note: str | None = None,
) -> Grant:
    """A grant from an outside identity provider or billing system, checked: its ids,
    scopes, a lifetime within ``policy``'s maximum for ``kind``, and no privileged scope
    on an automation grant the policy does not allow (InvalidInput)."""
    issued = float(issued_at if issued_at is not None else int(time.time()))
    if expires_at <= issued:
        raise InvalidInput("a grant must expire after it is issued")
    policy.ttl(kind, expires_at - issued)
    parsed = parse_scopes(scopes)
    policy.check_kind(kind, parsed)
    return Grant(
        jti=_check(JTI, jti, "jti"),
        subject=check_subject(subject),
        scopes=parsed,
        kind=kind,
        issuer=_check(ISSUER, issuer, "issuer"),
        issued_at=issued,
        expires_at=float(expires_at),
        note=_note(note),
    )


def record_grant_in(tx: Tx, grant: Grant, actor: str) -> tuple[Grant, bool]:
    """Insert ``grant`` with its ``grant.recorded`` audit entry in ``tx``; the same grant
    again is ``(existing, False)``, the same ``jti`` with other content a Conflict."""
    row = tx.conn.execute(select(s.grants).where(s.grants.c.jti == grant.jti)).first()
    if row is not None:
        existing = grant_record(row)
        same = (existing.subject, existing.scopes, existing.kind, existing.issuer, existing.expires_at)
        if same != (grant.subject, grant.scopes, grant.kind, grant.issuer, grant.expires_at):
            raise Conflict(f"grant {grant.jti!r} already exists with other content")
        return existing, False
    ControlPlaneStore._insert(tx, grant)
    ControlPlaneStore._audit_grant(tx, "grant.recorded", grant, actor)
    return grant, True


def revoke_in(tx: Tx, jti: str, *, actor: str, reason: str | None = None) -> Grant:
    """Revoke one grant in ``tx`` (revoking twice keeps the first revocation), with its
    ``grant.revoked`` audit entry; NotFound when there is no such grant."""
    row = tx.conn.execute(select(s.grants).where(s.grants.c.jti == jti)).first()
    if row is None:
        raise NotFound(f"grant {jti!r} not found")
    grant = grant_record(row)
    if grant.revoked_at is not None:
        return grant
    tx.conn.execute(update(s.grants).where(s.grants.c.jti == jti).values(revoked_at=tx.now, revoked_by=actor))
    tx.audit(
        "grant.revoked",
        actor=actor,
        target_type="grant",
        target_id=jti,
        detail={"subject": grant.subject, "reason": reason},
    )
    row = tx.conn.execute(select(s.grants).where(s.grants.c.jti == jti)).one()
    return grant_record(row)


def revoke_subject_in(
    tx: Tx,
    subject: str,
    *,
    actor: str,
    reason: str | None = None,
    issuer: str | None = None,
    keep: str | None = None,
) -> list[str]:
    """Revoke the unrevoked grants of ``subject`` in ``tx`` (only ``issuer``'s when given,
    never ``keep``), each with its audit entry; returns their ``jti``s."""
    g = s.grants
    query = select(g.c.jti).where(g.c.subject == subject, g.c.revoked_at.is_(None))
    if issuer is not None:
        query = query.where(g.c.issuer == issuer)
    if keep is not None:
        query = query.where(g.c.jti != keep)
    jtis = [row[0] for row in tx.conn.execute(query.order_by(g.c.jti))]
    if jtis:
        tx.conn.execute(update(g).where(g.c.jti.in_(jtis)).values(revoked_at=tx.now, revoked_by=actor))
    for jti in jtis:
        tx.audit(
            "grant.revoked",
            actor=actor,
            target_type="grant",
            target_id=jti,
            detail={"subject": subject, "reason": reason},
        )
    return jtis
