"""The harness's schedule and report, without a cluster: the same seed gives the same
schedule (every kind of fault in it), a failure prints the seed and the schedule that
reproduce it, and the closing line is ``N passed, N failed``."""

from __future__ import annotations

import itertools
import subprocess
import sys

from tests.faults.report import Report
from tests.faults.schedule import SHORT, Fault, make_schedule
from tests.integration.conftest import ROOT


def test_a_seed_gives_one_schedule_with_every_kind_of_fault() -> None:
    first = make_schedule(23, SHORT, "postgres", netns=True, lease_s=3.0)
    assert first == make_schedule(23, SHORT, "postgres", netns=True, lease_s=3.0)
    assert first != make_schedule(24, SHORT, "postgres", netns=True, lease_s=3.0)
    kinds = {(f.kind, f.target) for f in first}
    assert {("kill", "gateway"), ("kill", "s1"), ("kill", "s2"), ("kill", "w1"), ("kill", "w2")} <= kinds
    assert {("flush", "redis"), ("restart", "redis"), ("restart", "postgres"), ("netcut", "w2")} <= kinds
    # one fault at a time, all inside the launch phase
    for before, after in itertools.pairwise(first):
        assert after.at >= before.at + before.down_s
    assert first[-1].at < SHORT.duration_s
    # no PostgreSQL restart on SQLite, no cut without a namespace
    sqlite = {(f.kind, f.target) for f in make_schedule(23, SHORT, "sqlite", netns=False, lease_s=3.0)}
    assert ("restart", "postgres") not in sqlite and ("netcut", "w2") not in sqlite


def test_a_failure_prints_the_seed_and_the_schedule() -> None:
    report = Report("postgres", 77, "short", schedule=[Fault(2.9, "kill", "w1", 0.9)])
    report.check(True, "fine")
    report.check(False, "run r00001-77 (f-chain): node b: 2 successful attempts")
    lines = report.lines()
    assert "FAILED run r00001-77 (f-chain): node b: 2 successful attempts" in lines
    assert "reproduce: python -m tests.faults --store postgres --seed 77" in lines
    assert any("kill    w1" in line and "down 0.9s" in line for line in lines)
    assert lines[-1] == "postgres: 1 passed, 1 failed"


def test_the_command_line_refuses_bad_input_without_a_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.faults", "--runs", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--runs must be positive" in done.stderr and "Traceback" not in done.stderr
