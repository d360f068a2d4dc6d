"""Sandbox records and diff reviews: rows, events and audit entries.

A sandbox row follows one attempt of a sandbox node through the worker:
``created`` -> ``running`` (container started) -> ``succeeded`` | ``failed``, or
``lost`` when a later attempt of the same node finds it unfinished. Its
``review_status`` says what happens to the patches it produced:

- None: no patches, nothing to review.
- ``required``: the worker found patches; the attempt has not committed yet.
- ``pending``: the attempt committed and the node waits for a person
  (:func:`hold_for_review` makes this change in the commit's transaction).
- ``accepted`` / ``rejected``: decided (:func:`review`, or ``auto_accept_diffs``).
- ``superseded``: the attempt never committed (lost or fenced out); never reviewable.

Every function that writes is one step of a caller's transaction (:class:`Tx`), and
appends its events (``sandbox.created``, ``sandbox.started``, ``sandbox.finished``,
``sandbox.failed``, ``review.requested``, ``sandbox.reviewed``) to that transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Row, and_, select, update

from smithers.shared.errors import Conflict, InvalidInput, NotFound
from smithers.shared.redaction import redact, redact_text
from smithers.shared.status import AttemptState, NodeStatus
from smithers.shared.store import schema as s
from smithers.shared.store.approvals import assertion
from smithers.shared.store.tx import Tx

MAX_NOTE = 4000
AUTO_ACCEPT_ACTOR = "policy:auto_accept_diffs"


class SandboxStatus(StrEnum):
    """Where one sandbox (one attempt's container) stands."""

    CREATED = "created"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LOST = "lost"


class ReviewStatus(StrEnum):
    """What happens to a sandbox's patches (see the module docstring)."""

    REQUIRED = "required"
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"
    REVERTED = "reverted"  # a time-travel rewind reopened its step: the patch is withdrawn


@dataclass(frozen=True)
class ReviewRecord:
    """One review decision: who, when, accept or reject, and the note."""

    accept: bool
    actor: str
    note: str | None
    decided_at: float


@dataclass(frozen=True)
class SandboxRecord:
    """A sandbox row with its review decisions (oldest first)."""

    sandbox_id: str
    run_id: str
    node_id: str
    iteration: int
    attempt_id: str
    runtime: str
    image: str
    image_digest: str | None
    container_id: str | None
    limits: dict[str, Any]
    status: SandboxStatus
    review_status: ReviewStatus | None
    bundle_path: str
    request_bytes: int | None
    result_bytes: int | None
    manifest: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: float
    finished_at: float | None
    reviews: tuple[ReviewRecord, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def _record(row: Row[Any], reviews: Iterable[ReviewRecord] = ()) -> SandboxRecord:
    m = row._mapping
    return SandboxRecord(
        sandbox_id=m["sandbox_id"],
        run_id=m["run_id"],
        node_id=m["node_id"],
        iteration=m["iteration"],
        attempt_id=m["attempt_id"],
        runtime=m["runtime"],
        image=m["image"],
        image_digest=m["image_digest"],
        container_id=m["container_id"],
        limits=m["limits"],
        status=SandboxStatus(m["status"]),
        review_status=None if m["review_status"] is None else ReviewStatus(m["review_status"]),
        bundle_path=m["bundle_path"],
        request_bytes=m["request_bytes"],
        result_bytes=m["result_bytes"],
        manifest=m["manifest"],
        error=m["error"],
        created_at=m["created_at"],
        finished_at=m["finished_at"],
        reviews=tuple(reviews),
    )


def _row(conn: Connection, sandbox_id: str) -> Row[Any]:
    row = conn.execute(select(s.sandboxes).where(s.sandboxes.c.sandbox_id == sandbox_id)).first()
    if row is None:
        raise NotFound(f"sandbox {sandbox_id!r} not found")
    return row


def _where(row: Row[Any]) -> dict[str, Any]:
    return {"node_id": row.node_id, "iteration": row.iteration, "attempt_id": row.attempt_id}


def create(
    tx: Tx,
    *,
    sandbox_id: str,
    run_id: str,
    node_id: str,
    iteration: int,
    attempt_id: str,
    runtime: str,
    image: str,
    limits: Mapping[str, Any],
    bundle_path: str,
) -> None:
    """Record a new sandbox (``sandbox.created``); earlier unfinished ones become ``lost``.

    A row that already exists for ``sandbox_id`` (the same attempt taken over after
    its lease expired) is reset. Sandboxes of earlier attempts of the same node that
    never finished are marked ``lost`` (``sandbox.failed``) and their reviews
    ``superseded``, all in the caller's transaction.
    """
    sb = s.sandboxes
    stale = tx.conn.execute(
        select(sb).where(
            sb.c.run_id == run_id,
            sb.c.node_id == node_id,
            sb.c.iteration == iteration,
            sb.c.sandbox_id != sandbox_id,
            sb.c.status.in_([SandboxStatus.CREATED.value, SandboxStatus.RUNNING.value]),
        )
    ).all()
    for row in stale:
        error = {"code": "lost", "message": "its attempt ended without a result (worker lost)"}
        tx.conn.execute(
            update(sb)
            .where(sb.c.sandbox_id == row.sandbox_id)
            .values(status=SandboxStatus.LOST.value, error=error, finished_at=tx.now)
        )
        tx.emit(run_id, "sandbox.failed", **_where(row), payload={"sandbox_id": row.sandbox_id, **error})
    tx.conn.execute(
        update(sb)
        .where(
            sb.c.run_id == run_id,
            sb.c.node_id == node_id,
            sb.c.iteration == iteration,
            sb.c.review_status == ReviewStatus.REQUIRED.value,
        )
        .values(review_status=ReviewStatus.SUPERSEDED.value)
    )
    values = {
        "run_id": run_id,
        "node_id": node_id,
        "iteration": iteration,
        "attempt_id": attempt_id,
        "runtime": runtime,
        "image": image,
        "image_digest": None,
        "container_id": None,
        "limits": dict(limits),
        "status": SandboxStatus.CREATED.value,
        "review_status": None,
        "bundle_path": bundle_path,
        "request_bytes": None,
        "result_bytes": None,
        "manifest": None,
        "error": None,
        "created_at": tx.now,
        "finished_at": None,
    }
    retaken = tx.conn.execute(update(sb).where(sb.c.sandbox_id == sandbox_id).values(**values)).rowcount
    if not retaken:
        tx.conn.execute(sb.insert().values(sandbox_id=sandbox_id, **values))
    payload: dict[str, Any] = {"sandbox_id": sandbox_id, "runtime": runtime, "image": image}
    payload["limits"] = dict(limits)
    if retaken:
        payload["takeover"] = True
    tx.emit(
        run_id,
        "sandbox.created",
        node_id=node_id,
        iteration=iteration,
        attempt_id=attempt_id,
        payload=payload,
    )


def started(
    tx: Tx, sandbox_id: str, *, container_id: str, image_digest: str | None, request_bytes: int
) -> None:
    """The container runs: record its id and image digest (``sandbox.started``)."""
    row = _row(tx.conn, sandbox_id)
    tx.conn.execute(
        update(s.sandboxes)
        .where(s.sandboxes.c.sandbox_id == sandbox_id)
        .values(
            status=SandboxStatus.RUNNING.value,
            container_id=container_id,
            image_digest=image_digest,
            request_bytes=request_bytes,
        )
    )
    payload = {"sandbox_id": sandbox_id, "container_id": container_id, "image_digest": image_digest}
    tx.emit(row.run_id, "sandbox.started", **_where(row), payload=payload)


def finished(
    tx: Tx,
    sandbox_id: str,
    *,
    manifest: Mapping[str, Any],
    result_bytes: int,
    patches: int,
    auto_accept: bool,
) -> ReviewStatus | None:
    """The step succeeded: store its (redacted) manifest and sizes (``sandbox.finished``).

    With patches, the review is ``required`` (held once the attempt commits), or
    ``accepted`` at once under ``auto_accept_diffs``, recorded as a review by
    :data:`AUTO_ACCEPT_ACTOR` with its event and audit entry. Returns the review status.
    """
    row = _row(tx.conn, sandbox_id)
    review_status = None
    if patches:
        review_status = ReviewStatus.ACCEPTED if auto_accept else ReviewStatus.REQUIRED
    tx.conn.execute(
        update(s.sandboxes)
        .where(s.sandboxes.c.sandbox_id == sandbox_id)
        .values(
            status=SandboxStatus.SUCCEEDED.value,
            review_status=None if review_status is None else review_status.value,
            manifest=redact(dict(manifest)),
            result_bytes=result_bytes,
            finished_at=tx.now,
        )
    )
    payload = {"sandbox_id": sandbox_id, "patches": patches, "result_bytes": result_bytes}
    tx.emit(row.run_id, "sandbox.finished", **_where(row), payload=payload)
    if review_status is ReviewStatus.ACCEPTED:
        _decide(tx, row, accept=True, note="auto_accept_diffs", actor=AUTO_ACCEPT_ACTOR)
    return review_status


def failed(
    tx: Tx,
    sandbox_id: str,
    *,
    error: Mapping[str, Any],
    manifest: Mapping[str, Any] | None = None,
    result_bytes: int | None = None,
) -> None:
    """The step failed (bounds, OOM, timeout, exit code, bad patch): ``sandbox.failed``."""
    row = _row(tx.conn, sandbox_id)
    clean_error = redact(dict(error))
    tx.conn.execute(
        update(s.sandboxes)
        .where(s.sandboxes.c.sandbox_id == sandbox_id)
        .values(
            status=SandboxStatus.FAILED.value,
            error=clean_error,
            manifest=None if manifest is None else redact(dict(manifest)),
            result_bytes=result_bytes,
            finished_at=tx.now,
        )
    )
    tx.emit(row.run_id, "sandbox.failed", **_where(row), payload={"sandbox_id": sandbox_id, **clean_error})


def hold_for_review(tx: Tx, run_id: str, attempt_id: str) -> str | None:
    """In an attempt's commit: turn its ``required`` review into ``pending``.

    Returns the sandbox id when the node must wait for review (and emits
    ``review.requested``), else None. Part of the caller's transaction, so the node
    waits for review exactly when its result was committed.
    """
    sb = s.sandboxes
    row = tx.conn.execute(
        select(sb).where(
            sb.c.run_id == run_id,
            sb.c.attempt_id == attempt_id,
            sb.c.review_status == ReviewStatus.REQUIRED.value,
        )
    ).first()
    if row is None:
        return None
    tx.conn.execute(
        update(sb).where(sb.c.sandbox_id == row.sandbox_id).values(review_status=ReviewStatus.PENDING.value)
    )
    patches = [p.get("path") for p in (row.manifest or {}).get("patches", [])]
    payload = {"sandbox_id": row.sandbox_id, "patches": patches}
    tx.emit(run_id, "review.requested", **_where(row), payload=payload)
    return str(row.sandbox_id)


def _decide(
    tx: Tx, row: Row[Any], *, accept: bool, note: str | None, actor: str, asserted_by: str | None = None
) -> None:
    status = ReviewStatus.ACCEPTED if accept else ReviewStatus.REJECTED
    tx.conn.execute(
        s.sandbox_reviews.insert().values(
            sandbox_id=row.sandbox_id,
            run_id=row.run_id,
            accept=accept,
            actor=actor,
            note=note,
            decided_at=tx.now,
        )
    )
    tx.conn.execute(
        update(s.sandboxes)
        .where(s.sandboxes.c.sandbox_id == row.sandbox_id)
        .values(review_status=status.value)
    )
    detail: dict[str, Any] = {
        "sandbox_id": row.sandbox_id,
        "accepted": accept,
        "note": note,
        "decided_by": actor,
    }
    if asserted_by is not None:
        detail["asserted"] = assertion(asserted_by)
    tx.emit(row.run_id, "sandbox.reviewed", **_where(row), payload=detail)
    tx.audit(
        "sandbox.reviewed",
        actor=actor,
        target_type="sandbox",
        target_id=f"{row.run_id}/{row.sandbox_id}",
        run_id=row.run_id,
        detail=detail,
    )


def review(
    tx: Tx,
    run_id: str,
    sandbox_id: str,
    *,
    accept: bool,
    note: str | None,
    actor: str,
    asserted_by: str | None = None,
) -> SandboxRecord:
    """Accept or reject a sandbox's pending patches and wake the scheduler.

    The ``sandbox_reviews`` row, the new ``review_status``, the ``sandbox.reviewed``
    event and the audit entry are one transaction. Raises :class:`NotFound` for an
    unknown run or sandbox and :class:`Conflict` when nothing is waiting for review.
    """
    if not actor or len(actor) > 128:
        raise InvalidInput("a reviewer must be named in 1 to 128 characters")
    if note is not None and len(note) > MAX_NOTE:
        raise InvalidInput(f"a review note is limited to {MAX_NOTE} characters")
    if tx.lock_run(run_id) is None:
        raise NotFound(f"run {run_id!r} not found")
    row = tx.conn.execute(
        select(s.sandboxes).where(s.sandboxes.c.run_id == run_id, s.sandboxes.c.sandbox_id == sandbox_id)
    ).first()
    if row is None:
        raise NotFound(f"run {run_id!r} has no sandbox {sandbox_id!r}")
    if row.review_status != ReviewStatus.PENDING.value:
        why = {
            None: "produced no patches to review",
            ReviewStatus.REQUIRED.value: "has no committed result yet",
            ReviewStatus.SUPERSEDED.value: "was superseded by a later attempt",
        }.get(row.review_status, f"was already {row.review_status}")
        raise Conflict(f"sandbox {sandbox_id!r} of run {run_id!r} {why}")
    n = s.nodes
    node = tx.conn.execute(
        select(n.c.status, n.c.current_attempt_id).where(
            and_(n.c.run_id == run_id, n.c.node_id == row.node_id, n.c.iteration == row.iteration)
        )
    ).first()
    if node is None or node.status != NodeStatus.WAITING.value or node.current_attempt_id != row.attempt_id:
        raise Conflict(f"sandbox {sandbox_id!r}: node {row.node_id!r} is no longer waiting for this review")
    _decide(
        tx,
        row,
        accept=accept,
        note=None if note is None else redact_text(note),
        actor=actor,
        asserted_by=asserted_by,
    )
    tx.wake(run_id)
    return get_sandbox(tx.conn, run_id, sandbox_id)


def _reviews(conn: Connection, sandbox_ids: list[str]) -> dict[str, list[ReviewRecord]]:
    found: dict[str, list[ReviewRecord]] = {}
    if not sandbox_ids:
        return found
    r = s.sandbox_reviews
    rows = conn.execute(select(r).where(r.c.sandbox_id.in_(sandbox_ids)).order_by(r.c.id))
    for row in rows:
        found.setdefault(row.sandbox_id, []).append(
            ReviewRecord(accept=bool(row.accept), actor=row.actor, note=row.note, decided_at=row.decided_at)
        )
    return found


def get_sandbox(conn: Connection, run_id: str, sandbox_id: str) -> SandboxRecord:
    """One sandbox of a run with its reviews; :class:`NotFound` if there is none."""
    row = conn.execute(
        select(s.sandboxes).where(s.sandboxes.c.run_id == run_id, s.sandboxes.c.sandbox_id == sandbox_id)
    ).first()
    if row is None:
        raise NotFound(f"run {run_id!r} has no sandbox {sandbox_id!r}")
    return _record(row, _reviews(conn, [sandbox_id]).get(sandbox_id, ()))


def sandboxes_of(conn: Connection, run_id: str, review_status: str | None = None) -> list[SandboxRecord]:
    """A run's sandboxes in creation order, each with its reviews."""
    sb = s.sandboxes
    query = select(sb).where(sb.c.run_id == run_id)
    if review_status is not None:
        query = query.where(sb.c.review_status == review_status)
    rows = conn.execute(query.order_by(sb.c.created_at, sb.c.sandbox_id)).all()
    reviews = _reviews(conn, [r.sandbox_id for r in rows])
    return [_record(r, reviews.get(r.sandbox_id, ())) for r in rows]


def resolve_sandbox(conn: Connection, run_id: str, ref: str) -> str:
    """A sandbox id from ``ref``: a sandbox id of the run, or a node id (its sandbox
    pending review, else its newest). Raises :class:`NotFound` otherwise."""
    sb = s.sandboxes
    exact = conn.execute(select(sb.c.sandbox_id).where(sb.c.run_id == run_id, sb.c.sandbox_id == ref)).first()
    if exact is not None:
        return str(exact[0])
    pending = conn.execute(
        select(sb.c.sandbox_id).where(
            sb.c.run_id == run_id, sb.c.node_id == ref, sb.c.review_status == ReviewStatus.PENDING.value
        )
    ).all()
    if len(pending) == 1:
        return str(pending[0][0])
    if pending:
        raise Conflict(f"node {ref!r} of run {run_id!r} has several pending reviews; name the sandbox id")
    newest = conn.execute(
        select(sb.c.sandbox_id)
        .where(sb.c.run_id == run_id, sb.c.node_id == ref)
        .order_by(sb.c.created_at.desc())
        .limit(1)
    ).first()
    if newest is not None:
        return str(newest[0])  # not pending: review() says why
    raise NotFound(f"run {run_id!r} has no sandbox {ref!r} (nor a node of that name waiting for review)")


def review_decisions(conn: Connection, run_id: str, attempt_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """For the decision: by attempt id, the review state of that attempt's sandbox.

    Each value is ``{"status", "sandbox_id", "note", "decided_by", "decided_at"}``
    (the last three from the newest review, if any).
    """
    ids = [a for a in attempt_ids if a]
    if not ids:
        return {}
    sb = s.sandboxes
    rows = conn.execute(
        select(sb.c.sandbox_id, sb.c.attempt_id, sb.c.review_status).where(
            sb.c.run_id == run_id, sb.c.attempt_id.in_(ids)
        )
    ).all()
    reviews = _reviews(conn, [r.sandbox_id for r in rows])
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        found = reviews.get(r.sandbox_id)
        last = found[-1] if found else None
        out[r.attempt_id] = {
            "status": r.review_status,
            "sandbox_id": r.sandbox_id,
            "note": last.note if last else None,
            "decided_by": last.actor if last else None,
            "decided_at": last.decided_at if last else None,
        }
    return out


def live_attempts(conn: Connection, attempt_ids: Iterable[str], now: float) -> set[str]:
    """Those of ``attempt_ids`` that are running under a lease that has not expired.

    A sandbox container whose attempt is not among them is an orphan, whichever
    worker started it (worker names change when compose or Kubernetes recreates one).
    """
    ids = sorted(set(attempt_ids))
    if not ids:
        return set()
    rows = conn.execute(
        select(s.attempts.c.attempt_id).where(
            s.attempts.c.attempt_id.in_(ids),
            s.attempts.c.state.in_([AttemptState.QUEUED.value, AttemptState.RUNNING.value]),
            (s.attempts.c.lease_expires_at.is_(None)) | (s.attempts.c.lease_expires_at > now),
        )
    )
    return {row.attempt_id for row in rows}
