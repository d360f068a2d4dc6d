"""The fault harness's short profile, on both stores: a gateway, two schedulers and two
step workers (one in its own network namespace) under a seeded schedule of faults
while runs are launched over REST; every run checked. About two minutes a store.

The seed is fixed (``SMITHERS_FAULT_SEED`` picks another); a failure prints the seed
and the fault schedule, and ``python -m tests.faults --store S --seed N`` replays it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import missing, redis_binary
from tests.faults.harness import Round
from tests.faults.schedule import SHORT
from tests.faults.services import netns_unavailable, postgres_available

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]
SEED = int(os.environ.get("SMITHERS_FAULT_SEED", "23"))


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_every_run_survives_a_seeded_fault_schedule(store: str, tmp_path: Path) -> None:
    # given the machine can run the cluster (a missing piece skips here, fails under CI)
    if redis_binary() is None:
        missing("redis-server")
    if store == "postgres" and (why := postgres_available()):
        missing(f"a private PostgreSQL ({why})")
    if why := netns_unavailable():
        missing(f"network namespaces for the worker on its own host ({why})")

    # when runs are launched over REST for about a minute while faults land
    lines: list[str] = []
    report = Round(store, SEED, SHORT, tmp_path, netns=True, log=lines.append).run()

    # then every run ended as it would have without faults, and recovery stayed in bounds
    lines += report.lines()
    print("\n".join(lines))
    assert report.failed == 0, "\n".join(lines)
    assert report.passed >= SHORT.runs  # one check a run at least: the checks ran
