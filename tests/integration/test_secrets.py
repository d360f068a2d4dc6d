"""A secret used by a step never reaches the store or a log line."""

from __future__ import annotations

from typing import Any

import sqlalchemy

from smithers.shared.status import RunStatus
from smithers.shared.store import schema as s
from tests.integration.conftest import Engine

SECRET = "s3cr3t-value-0f-the-test-7d1c"


def test_a_secret_used_by_a_step_is_nowhere_in_the_store_or_the_logs(
    engine_factory: Any, database_url: str
) -> None:
    # given a worker holding a secret in its own environment
    eng: Engine = engine_factory(database_url, SMITHERS_SECRET_TEST=SECRET)
    eng.scheduler()
    eng.worker()

    # when a step reads it and even tries to return it
    run_id = eng.launch("t-secret")
    run = eng.wait(run_id)

    # then the step saw it, but no table row and no log line holds the value
    assert run.status is RunStatus.SUCCEEDED
    assert run.output["use_secret"]["length"] == len(SECRET)
    assert run.output["use_secret"]["echo"] == "value was [redacted]"
    with eng.store.read() as conn:
        for table in s.metadata.sorted_tables:
            for row in conn.execute(sqlalchemy.select(table)):
                assert SECRET not in repr(tuple(row)), f"secret found in table {table.name}"
    eng.stop_all()
    for log in eng.logs.glob("*.log"):
        assert SECRET not in log.read_text(errors="replace"), f"secret found in {log.name}"


def test_a_secret_logged_every_way_or_used_as_an_output_key_is_nowhere(
    engine_factory: Any, database_url: str
) -> None:
    # given a step that logs its secret as a message, an argument, a mapping argument,
    # extra fields (key and value), a traceback (exception text), a stack, through
    # Celery's task logger and print, and returns it as an output key
    eng: Engine = engine_factory(database_url, SMITHERS_SECRET_TEST=SECRET)
    eng.scheduler()
    eng.worker()

    # when it runs
    run = eng.wait(eng.launch("t-secret-leaks"))

    # then the output keys are masked, and no row and no log line holds the value
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert run.output["leak_everywhere"] == {
        "[redacted]": "the secret as a key",
        "nested": {"k-[redacted]": 1},
    }
    with eng.store.read() as conn:
        for table in s.metadata.sorted_tables:
            for row in conn.execute(sqlalchemy.select(table)):
                assert SECRET not in repr(tuple(row)), f"secret found in table {table.name}"
    eng.stop_all()
    text = "".join(log.read_text(errors="replace") for log in eng.logs.glob("*.log"))
    for marker in ("message", "extra", "stack of", "exc_info", "task logger", "printed", "RuntimeError"):
        assert marker in text, f"{marker!r} was never logged: the test would prove nothing"
    assert SECRET not in text
    assert SECRET.encode("unicode_escape").decode() not in text
