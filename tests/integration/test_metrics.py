"""shared/metrics.py against a real engine: the figures a Prometheus scrape would see."""

from __future__ import annotations

import time
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from smithers.shared.broker import Broker
from smithers.shared.metrics import StoreCollector, collect
from smithers.shared.status import RunStatus
from smithers.shared.store import Store
from tests.conftest import free_port
from tests.integration.conftest import Engine


def _samples(store: Store, broker: Broker | None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Scrape through a registry and parse the text back, as Prometheus would."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, broker))
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_runs_steps_approvals_cache_and_queues_are_counted(engine: Engine) -> None:
    # given a finished run, a run waiting for approval, a cache miss then a hit
    done = engine.launch("t-chain", {"n": 1})
    waiting = engine.launch("t-approval")
    engine.wait(done)
    engine.wait(waiting, until={RunStatus.WAITING})
    first = engine.launch("t-cache-wf-a", {"n": 3})
    engine.wait(first)
    second = engine.launch("t-cache-wf-a", {"n": 3})
    engine.wait(second)
    # and a message nobody consumes, on the sandbox queue
    engine.broker.send_step("no-such-attempt", "sandbox")

    # when a scrape reads the store and Redis
    time.sleep(0.2)
    got = _samples(engine.store, engine.broker)

    # then runs by status, step latencies, approvals, cache and queue depth are there
    assert got[("smithers_runs", (("status", "succeeded"), ("workflow", "t-chain")))] == 1
    assert got[("smithers_runs", (("status", "waiting"), ("workflow", "t-approval")))] == 1
    assert got[("smithers_runs", (("status", "failed"), ("workflow", "t-chain")))] == 0
    count = got[("smithers_step_duration_seconds_count", (("queue", "steps"), ("state", "succeeded")))]
    assert count >= 3  # the chain's steps, the approval's prepare, the cache miss
    ok = (("queue", "steps"), ("state", "succeeded"))
    inf = got[("smithers_step_duration_seconds_bucket", (("le", "+Inf"), *ok))]
    assert inf == count
    assert got[("smithers_step_queue_seconds_count", (("queue", "steps"),))] >= count
    assert got[("smithers_approvals_waiting", ())] == 1
    assert got[("smithers_approvals_oldest_age_seconds", ())] > 0
    assert got[("smithers_cache_lookups_total", (("result", "hit"),))] == 1
    assert got[("smithers_cache_lookups_total", (("result", "miss"),))] == 1
    assert got[("smithers_cache_entries", (("scope", "workflow"), ("state", "live")))] == 1
    assert got[("smithers_queue_depth", (("queue", "sandbox"),))] == 1
    assert got[("smithers_sandbox_outcomes_total", (("status", "succeeded"),))] == 0
    assert got[("smithers_store_up", ())] == 1
    assert got[("smithers_broker_up", ())] == 1


def test_an_unreachable_broker_or_store_is_reported_not_raised(tmp_path: Path) -> None:
    # given a store whose file cannot be opened and a broker nobody listens on
    store = Store(f"sqlite:///{tmp_path / 'missing' / 'nowhere.db'}")
    broker = Broker(f"redis://127.0.0.1:{free_port()}/0")
    try:
        # when collected
        families = {f.name: f for f in collect(store, broker)}
    finally:
        broker.close()
        store.close()

    # then the scrape still answers, saying what is down
    assert families["smithers_store_up"].samples[0].value == 0
    assert families["smithers_broker_up"].samples[0].value == 0
    assert "smithers_runs" not in families


def test_no_broker_configured_is_broker_down(sqlite_url: str) -> None:
    store = Store(sqlite_url)
    store.migrate()
    try:
        families = {f.name: f for f in collect(store, None)}
    finally:
        store.close()
    assert families["smithers_broker_up"].samples[0].value == 0
    assert families["smithers_store_up"].samples[0].value == 1
    assert families["smithers_runs"].samples == []
