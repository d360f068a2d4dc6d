"""All tables in one MetaData (SQLAlchemy Core); JSON becomes JSONB on PostgreSQL.

Times are float epoch seconds (UTC) on both backends. Every run-owned table references
``runs`` with ``ON DELETE CASCADE`` so a run is deleted whole; the audit tables
(``audit_log``, ``time_travel_audit``) deliberately do not, so their rows outlive it.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()
Json = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
RunId = String(64)


def _run_fk() -> ForeignKey:
    return ForeignKey("runs.run_id", ondelete="CASCADE")


schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", Float, nullable=False),
)

counters = Table(
    "counters",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", BigInteger, nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", RunId, primary_key=True),
    Column("workflow", String(128), nullable=False),
    Column("workflow_version", String(64), nullable=False),
    Column("module_revision", String(64), nullable=False),
    Column("deployment_version", String(64), nullable=False),
    Column("input", Json, nullable=False),
    Column("input_hash", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("next_seq", BigInteger, nullable=False, default=0),
    Column("wake_at", Float),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("output", Json),
    Column("error", Json),
    Column("launched_by", String(128)),
    Column("parent_run_id", RunId),
    Column("lineage", Json),
    # Set once a rewind or a resume removed node rows: the run's attempt numbers must
    # then be counted, not read off the node rows (smithers.shared.decision_steps, Dispatch.number).
    Column("reopened", Boolean, nullable=False, server_default=false()),
    # The launch's W3C trace context when tracing is on (smithers.shared.tracing): the
    # scheduler is woken over Redis without one, and continues the launch's trace from it.
    Column("traceparent", String(64)),
    # Why a live run cannot move (``revision_unavailable``: no live process holds its
    # module revision; smithers.shared.store.revisions), NULL when nothing is wrong.
    Column("status_reason", String(32)),
    # A child run's link to its parent's node execution (smithers.shared.store.children):
    # parent_run_id is also a rerun's source; parent_node_id is set only on a child.
    # parent_epoch counts the node execution's earlier children (smithers.shared.child).
    Column("parent_node_id", String(64)),
    Column("parent_iteration", Integer),
    Column("parent_epoch", Integer),
    # v17: the launch's priority, 0..9, higher first (smithers.shared.flow)
    Column("priority", Integer, nullable=False, server_default=text("0")),
    # v14: the run's spending ceilings {"tokens", "cost"} (smithers.shared.budget), NULL: none
    Column("budget", Json),
    Index("ix_runs_wake_at", "wake_at"),
    Index("ix_runs_status", "status"),
    Index("ix_runs_workflow_created", "workflow", "created_at"),
    Index("ix_runs_parent", "parent_run_id", "parent_node_id"),
)

nodes = Table(
    "nodes",
    metadata,
    Column("run_id", RunId, _run_fk(), primary_key=True),
    Column("node_id", String(64), primary_key=True),
    Column("iteration", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("failures", Integer, nullable=False, default=0),
    Column("lost", Integer, nullable=False, default=0),
    Column("current_attempt_id", String(36)),
    Column("current_iteration", Integer, nullable=False, default=0),
    Column("next_at", Float),
    Column("started_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("error", Json),
)

attempts = Table(
    "attempts",
    metadata,
    Column("attempt_id", String(36), primary_key=True),
    Column("run_id", RunId, _run_fk(), nullable=False),
    Column("node_id", String(64), nullable=False),
    Column("iteration", Integer, nullable=False),
    Column("number", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("queue", String(32), nullable=False),
    Column("claim_token", String(36)),
    Column("worker", String(200)),
    Column("dispatched_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("heartbeat_at", Float),
    Column("lease_expires_at", Float),
    Column("deadline_at", Float),
    Column("timeout_s", Float),
    Column("error", Json),
    Column("cached", Boolean, nullable=False, default=False),
    Column("cache_key", String(64)),
    # The module revision this attempt runs (the run's when it was dispatched, or the
    # one an operator migrated the run to before the attempt started).
    Column("revision", String(64)),
    Index("ix_attempts_node", "run_id", "node_id", "iteration"),
)

outputs = Table(
    "outputs",
    metadata,
    Column("run_id", RunId, primary_key=True),
    Column("node_id", String(64), primary_key=True),
    Column("iteration", Integer, primary_key=True),
    Column("value", Json),
    Column("attempt_id", String(36)),
    Column("created_at", Float, nullable=False),
    ForeignKeyConstraint(
        ["run_id", "node_id", "iteration"],
        ["nodes.run_id", "nodes.node_id", "nodes.iteration"],
        ondelete="CASCADE",
    ),
)

events = Table(
    "events",
    metadata,
    Column("run_id", RunId, _run_fk(), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    # NULL on PostgreSQL until the event is numbered after its commit (smithers.shared.store.feed).
    Column("feed_id", BigInteger, unique=True),
    Column("type", String(64), nullable=False),
    Column("node_id", String(64)),
    Column("iteration", Integer),
    Column("attempt_id", String(36)),
    Column("payload", Json, nullable=False),
    Column("created_at", Float, nullable=False),
    Index(
        "ix_events_unnumbered",
        "run_id",
        "seq",
        postgresql_where=text("feed_id IS NULL"),
        sqlite_where=text("feed_id IS NULL"),
    ),
)

approvals = Table(
    "approvals",
    metadata,
    Column("run_id", RunId, primary_key=True),
    Column("node_id", String(64), primary_key=True),
    Column("iteration", Integer, primary_key=True),
    Column("status", String(16), nullable=False),
    Column("owner", String(128)),
    Column("fallback_owner", String(128)),
    Column("escalate_at", Float),
    Column("requested_at", Float, nullable=False),
    Column("decided_by", String(128)),
    Column("decided_at", Float),
    Column("note", Text),
    # v7: the declaration copied at request time (smithers.shared.approval), the decision's
    # checked payload, and when the escalation event was emitted (once).
    Column("spec", Json),
    Column("payload", Json),
    Column("escalated_at", Float),
    ForeignKeyConstraint(
        ["run_id", "node_id", "iteration"],
        ["nodes.run_id", "nodes.node_id", "nodes.iteration"],
        ondelete="CASCADE",
    ),
    Index("ix_approvals_status", "status"),
)

# v12: signals sent to a run (smithers.shared.store.signals); ``id`` orders arrivals, a
# signal node takes the first one of its name not yet consumed.
signals = Table(
    "signals",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("run_id", RunId, _run_fk(), nullable=False),
    Column("name", String(64), nullable=False),
    Column("signal_id", String(128), nullable=False),
    Column("payload", Json),
    Column("sender", String(128)),
    Column("received_at", Float, nullable=False),
    Column("consumed_node", String(64)),
    Column("consumed_iteration", Integer),
    Column("consumed_at", Float),
    Index("ux_signals_run_signal", "run_id", "signal_id", unique=True),
    Index("ix_signals_run_name", "run_id", "name", "id"),
)

# v13: the state of each declared cron schedule (smithers.shared.store.schedules): paused
# or not, and how far its ticks were dealt with (fired or skipped), so every scheduler agrees.
schedules = Table(
    "schedules",
    metadata,
    Column("workflow", String(128), primary_key=True),
    Column("schedule_id", String(64), primary_key=True),
    Column("cron", String(200), nullable=False),
    Column("tz", String(64), nullable=False),
    Column("paused", Boolean, nullable=False, server_default=false()),
    Column("paused_by", String(128)),
    Column("changed_at", Float),
    Column("done_until", Float),  # every tick up to it was fired or skipped
    Column("last_tick", Float),  # the latest tick that launched a run, and that run
    Column("last_run_id", RunId),
    Column("fired", BigInteger, nullable=False, server_default="0"),
    Column("skipped", BigInteger, nullable=False, server_default="0"),
    Column("created_at", Float, nullable=False),
)

# v14: what each attempt reported spending (smithers.shared.store.spend); only attempts
# that reported have a row. Rows stay when a rewind or resume discards their node rows.
spend = Table(
    "spend",
    metadata,
    Column("attempt_id", String(36), primary_key=True),
    Column("run_id", RunId, _run_fk(), nullable=False),
    Column("node_id", String(64), nullable=False),
    Column("iteration", Integer, nullable=False),
    Column("tokens_in", BigInteger, nullable=False),
    Column("tokens_out", BigInteger, nullable=False),
    Column("cost", Float, nullable=False),
    Column("reported_at", Float, nullable=False),
    Index("ix_spend_run", "run_id"),
)

grants = Table(
    "grants",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("subject", String(128), nullable=False),
    Column("scopes", Json, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("issuer", String(128), nullable=False),
    Column("issued_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("revoked_at", Float),
    Column("revoked_by", String(128)),
    Column("note", Text),
    Index("ix_grants_subject", "subject"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("actor", String(128)),
    Column("action", String(64), nullable=False),
    Column("target_type", String(32)),
    Column("target_id", String(128)),
    Column("run_id", RunId),
    Column("detail", Json, nullable=False),
    # v6: a row can stand for many like events (denied requests of one source and reason
    # in one interval): ``count`` of them, folded onto the row whose ``dedupe_key`` they share
    Column("count", Integer, nullable=False, server_default="1"),
    Column("dedupe_key", String(64)),
    Index("ix_audit_run", "run_id", "at"),
    Index("ux_audit_dedupe", "dedupe_key", unique=True),
)

# v10: the ids of signed control-plane webhook deliveries (smithers.shared.store.webhooks),
# kept while their timestamp is within the tolerance, so a replay is refused
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("source", String(16), primary_key=True),
    Column("webhook_id", String(128), primary_key=True),
    Column("received_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("ix_webhook_deliveries_expires", "expires_at"),
)

sandboxes = Table(
    "sandboxes",
    metadata,
    Column("sandbox_id", String(64), primary_key=True),
    Column("run_id", RunId, _run_fk(), nullable=False),
    Column("node_id", String(64), nullable=False),
    Column("iteration", Integer, nullable=False),
    Column("attempt_id", String(36), nullable=False),
    Column("runtime", String(32), nullable=False),
    Column("image", String(256), nullable=False),
    Column("image_digest", String(128)),
    Column("container_id", String(128)),
    Column("limits", Json, nullable=False),
    Column("status", String(16), nullable=False),
    Column("review_status", String(16)),
    Column("bundle_path", Text, nullable=False),
    Column("request_bytes", BigInteger),
    Column("result_bytes", BigInteger),
    Column("manifest", Json),
    Column("error", Json),
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float),
    Index("ix_sandboxes_run", "run_id"),
)

sandbox_reviews = Table(
    "sandbox_reviews",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("sandbox_id", String(64), ForeignKey("sandboxes.sandbox_id", ondelete="CASCADE"), nullable=False),
    Column("run_id", RunId, _run_fk(), nullable=False),
    Column("accept", Boolean, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("note", Text),
    Column("decided_at", Float, nullable=False),
)

cache_entries = Table(
    "cache_entries",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("scope", String(16), nullable=False),
    Column("workflow", String(128)),
    Column("run_id", RunId),
    Column("node_id", String(64), nullable=False),
    Column("version", String(64), nullable=False),
    Column("value", Json),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float),
    Column("attempt_id", String(36)),
)

time_travel_audit = Table(
    "time_travel_audit",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("run_id", RunId, nullable=False),
    Column("action", String(16), nullable=False),
    Column("caller", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("params", Json, nullable=False),
    Column("result", Json),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),
    Index("ix_tta_run", "run_id"),
)

# The graph of every workflow revision a process registered or a run launched with,
# written at first sight, so an old run stays readable after its module is gone.
revisions = Table(
    "revisions",
    metadata,
    Column("workflow", String(128), primary_key=True),
    Column("revision", String(64), primary_key=True),
    Column("version", String(64), nullable=False),
    Column("module", String(256), nullable=False),
    Column("graph", Json, nullable=False),
    Column("first_seen", Float, nullable=False),
)

# Processes that hold (loaded) a workflow revision, one row per process and revision,
# refreshed by a heartbeat; a row older than the TTL is a holder that is gone.
holders = Table(
    "holders",
    metadata,
    Column("process_id", String(200), primary_key=True),
    Column("workflow", String(128), primary_key=True),
    Column("revision", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Index("ix_holders_revision", "revision", "last_seen"),
)

# v17: flow control (smithers.shared.flow, smithers.shared.store.flow). A gate per
# (workflow, kind, key value): ``held`` counts the concurrency slots held (its row is the
# lock every admission and release takes), ``starts`` the latest start times of a rate.
flow_gates = Table(
    "flow_gates",
    metadata,
    Column("workflow", String(128), primary_key=True),
    Column("kind", String(16), primary_key=True),  # concurrency | rate
    Column("key", String(200), primary_key=True),
    Column("held", Integer, nullable=False),
    Column("starts", Json),
    Column("updated_at", Float, nullable=False),
)

# A run waiting at a gate or holding a concurrency slot: one row per run, removed in the
# transaction that ends it (its slot then goes to the first in line).
flow_slots = Table(
    "flow_slots",
    metadata,
    Column("run_id", RunId, _run_fk(), primary_key=True),
    Column("workflow", String(128), nullable=False),
    Column("key", String(200), nullable=False),
    Column("state", String(16), nullable=False),  # waiting | held
    Column("priority", Integer, nullable=False),
    Column("since", Float, nullable=False),
    Index("ix_flow_slots_line", "workflow", "key", "state"),
)
