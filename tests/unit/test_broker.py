"""What a step message shows and the broker settings, without a broker."""

from __future__ import annotations

from smithers.shared.broker import celery_settings
from smithers.shared.store.state import Message


def test_a_step_message_is_labelled_by_workflow_run_node_and_attempt_never_by_input() -> None:
    first = Message("att-1", "steps", None, "run-2cb7", "greet", 0, 1, "hello")
    looped = Message("att-2", "steps", 30.0, "run-2cb7", "draft", 2, 3, "hello")
    assert first.label == "hello/run-2cb7/greet#1"
    assert looped.label == "hello/run-2cb7/draft[2]#3"


def test_visibility_timeout_is_set_for_redis_brokers_only() -> None:
    on_redis = celery_settings("redis://127.0.0.1:6379/0", 120.0)
    on_rabbitmq = celery_settings("amqp://guest:guest@127.0.0.1:5672//", 120.0)
    assert on_redis["broker_transport_options"] == {"visibility_timeout": 120.0}
    assert "broker_transport_options" not in on_rabbitmq
    assert on_rabbitmq["broker_url"].startswith("amqp://")
    assert [q.name for q in on_rabbitmq["task_queues"]] == [q.name for q in on_redis["task_queues"]]
