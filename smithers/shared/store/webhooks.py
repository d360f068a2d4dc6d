"""Signed control-plane webhooks in the store: the delivery's id and its change, at once.

A delivery (:mod:`smithers.shared.webhook`) is applied in one transaction: forget ids
whose timestamps left the tolerance, claim the delivery's id, make its change (a grant
recorded, revoked, a subject revoked) with the change's own audit entries, and audit its
receipt. If anything is refused the transaction rolls back and the id stays unclaimed,
so the sender's retry is applied; once it committed, the same id again is refused
(:class:`~smithers.shared.errors.Conflict`, code ``webhook_replayed``) on every gateway
process. Only the normalized change is written, never the payload.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete

from smithers.shared.errors import Conflict
from smithers.shared.grants import TtlPolicy
from smithers.shared.store import schema as s
from smithers.shared.store.grants import outside_grant, record_grant_in, revoke_in, revoke_subject_in
from smithers.shared.store.store import Store
from smithers.shared.store.tx import Tx
from smithers.shared.webhook import (
    Delivery,
    Event,
    Ignore,
    RecordGrant,
    RevokeGrant,
    RevokeSubject,
)


class WebhookReplayed(Conflict):
    """A delivery whose ``webhook-id`` was already applied."""

    code = "webhook_replayed"


def claim(tx: Tx, delivery: Delivery, tolerance_s: float) -> bool:
    """Remember ``delivery``'s id until its timestamp leaves the tolerance; False when it
    is already remembered. On PostgreSQL a second claim of an id another transaction holds
    waits for that one to end (the unique key), then succeeds only if it rolled back."""
    d = s.webhook_deliveries
    stmt = tx.dialect.insert_or_ignore(d, ("source", "webhook_id")).values(
        source=delivery.source.value,
        webhook_id=delivery.webhook_id,
        received_at=tx.now,
        expires_at=delivery.timestamp + tolerance_s,
    )
    # RETURNING says whether the row went in (psycopg 3 gives no row count here)
    return tx.conn.execute(stmt.returning(d.c.webhook_id)).first() is not None


def prune(tx: Tx) -> int:
    """Forget ids whose deliveries would be refused as stale anyway; returns how many."""
    d = s.webhook_deliveries
    return tx.conn.execute(delete(d).where(d.c.expires_at < tx.now)).rowcount


def apply(
    store: Store, policy: TtlPolicy, delivery: Delivery, event: Event, tolerance_s: float
) -> dict[str, Any]:
    """Apply a verified delivery's change, once: one transaction (see the module).

    Returns ``{"webhook_id", "type", "effect", "grants", "revoked"}``; raises
    WebhookReplayed for an id already applied, and what the change raises (InvalidInput
    for a lifetime over the policy, Conflict for a grant id with other content, NotFound).
    """
    actor = delivery.source.issuer
    with store.write() as tx:
        prune(tx)
        if not claim(tx, delivery, tolerance_s):
            raise WebhookReplayed(
                f"webhook-id {delivery.webhook_id!r} was already received: a delivery is applied once"
            )
        effect, grants, revoked, subject = _change(tx, policy, delivery, event, actor)
        tx.audit(
            "webhook.received",
            actor=actor,
            target_type="webhook",
            target_id=delivery.webhook_id,
            detail={
                "source": delivery.source.value,
                "type": event.type,
                "timestamp": delivery.timestamp,
                "effect": effect,
                "subject": subject,
                "grants": grants,
                "revoked": revoked,
            },
        )
    return {
        "webhook_id": delivery.webhook_id,
        "type": event.type,
        "effect": effect,
        "grants": grants,
        "revoked": revoked,
    }


def _change(
    tx: Tx, policy: TtlPolicy, delivery: Delivery, event: Event, actor: str
) -> tuple[str, list[str], list[str], str | None]:
    """(effect, recorded grant ids, revoked grant ids, subject) of ``event``'s change."""
    change = event.change
    issuer = delivery.source.issuer
    if isinstance(change, RecordGrant):
        grant = outside_grant(
            policy,
            jti=change.jti,
            subject=change.subject,
            scopes=[sc.value for sc in change.scopes],
            kind=change.kind,
            issuer=issuer,
            expires_at=change.expires_at,
            issued_at=change.issued_at,
            note=change.note,
        )
        _, created = record_grant_in(tx, grant, actor)
        revoked = (
            revoke_subject_in(
                tx,
                grant.subject,
                actor=actor,
                reason=f"replaced by {grant.jti}",
                issuer=issuer,
                keep=grant.jti,
            )
            if change.replaces
            else []
        )
        return ("grant_recorded" if created else "unchanged"), [grant.jti], revoked, grant.subject
    if isinstance(change, RevokeGrant):
        grant = revoke_in(tx, change.jti, actor=actor, reason=change.reason)
        return "grant_revoked", [], [grant.jti], grant.subject
    if isinstance(change, RevokeSubject):
        jtis = revoke_subject_in(
            tx,
            change.subject,
            actor=actor,
            reason=change.reason,
            issuer=issuer if change.own_only else None,
        )
        return "subject_revoked", [], jtis, change.subject
    assert isinstance(change, Ignore)
    return "ignored", [], [], None
