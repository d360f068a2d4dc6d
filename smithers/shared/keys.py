"""Names shared by every process: Redis keys, Celery queues and task names."""

from __future__ import annotations

from smithers.shared.workflow import NodeKind

WAKE_KEY = "smithers:wake"  # a Redis list of run ids the scheduler should look at
# When the broker's current contents began: a FLUSHALL or a restart of a Redis without
# persistence removes it, and the next scheduler to look writes a new one (see
# smithers.shared.broker.Broker.epoch)
EPOCH_KEY = "smithers:broker-epoch"
STEPS_QUEUE = "steps"
SANDBOX_QUEUE = "sandbox"
QUEUES = (STEPS_QUEUE, SANDBOX_QUEUE)
STEP_TASK = "smithers.step"
# A step message's header: the publish key of the transaction that dispatched it, when
# the message was sent before that transaction committed (PostgreSQL).
AFTER_HEADER = "smithers_after"


def revision_queue(queue: str, revision: str) -> str:
    """The Celery queue of ``queue``'s steps of one module revision (``steps.<12 hex>``):
    only workers that hold the revision consume it (smithers.shared.store.revisions)."""
    return f"{queue}.{revision[:12]}" if revision else queue


def wake_key(revision: str) -> str:
    """The Redis list of wake-ups for runs of one module revision, which only the
    schedulers holding it wait on (the plain ``WAKE_KEY`` is for any scheduler)."""
    return f"{WAKE_KEY}:{revision[:12]}"


def queue_for(kind: NodeKind) -> str:
    """The Celery queue a dispatched node kind goes to."""
    return SANDBOX_QUEUE if kind is NodeKind.SANDBOX else STEPS_QUEUE
