"""A step output that strict JSON cannot hold fails the step with a clear error, on both
stores: never a stuck record, never a value a strict parser refuses."""

from __future__ import annotations

from typing import Any

import pytest

from smithers.shared.status import RunStatus
from smithers.shared.store.queries import attempts_of
from tests.integration.conftest import Engine

pytestmark = pytest.mark.timeout(180)

EXPECTED = {
    "nan": "the step's output.value is not a finite number",
    "inf": "the step's output.value is not a finite number",
    "nul": "the step's output.value contains a NUL character",
    "surrogate": "the step's output.value contains a lone UTF-16 surrogate",
    "big": "the step's output.value is an integer past",
    "nul_key": "a key of the step's output.value contains a NUL character",
}


def test_an_unstorable_output_fails_the_step_naming_the_field(engine_factory: Any, database_url: str) -> None:
    eng: Engine = engine_factory(database_url)
    eng.scheduler()
    eng.worker()
    runs = {kind: eng.launch("t-bad-output", {"kind": kind}) for kind in EXPECTED}
    for kind, run_id in runs.items():
        run = eng.wait(run_id)
        assert run.status is RunStatus.FAILED, (kind, run.status)
        with eng.store.read() as conn:
            attempts = [a for a in attempts_of(conn, run_id) if a.node_id == "unstorable"]
        assert attempts and all(a.error is not None for a in attempts), kind
        message = attempts[-1].error["message"]  # type: ignore[index]
        assert message.startswith(EXPECTED[kind]), (kind, message)
