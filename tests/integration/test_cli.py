"""The smithers command on the embedded default: `smithers up` in one process,
`smithers run` / `approve` / `watch` from others, and clear errors for bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def smithers(data_dir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMITHERS_")}
    env["SMITHERS_WORKFLOWS"] = "smithers.examples.hello,smithers.examples.approval_demo"
    return subprocess.run(
        [sys.executable, "-m", "smithers", *args, "--data-dir", str(data_dir)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Path]:
    """`smithers up` running on a fresh data directory (SQLite + embedded broker)."""
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMITHERS_")}
    env["SMITHERS_WORKFLOWS"] = "smithers.examples.hello,smithers.examples.approval_demo"
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "smithers", "up", "--data-dir", str(data), "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 30
    while not (data / "broker.json").exists():
        assert proc.poll() is None and time.time() < deadline, (tmp_path / "up.log").read_text()
        time.sleep(0.1)
    yield data
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    assert not (data / "broker.json").exists()


def test_run_follows_progress_and_exits_zero_with_the_output(up: Path) -> None:
    result = smithers(up, "run", "hello", "--input", '{"name": "ada"}', "--run-id", "hello-1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✓ summary" in result.stdout
    last = result.stdout.strip().splitlines()[-1]
    assert json.loads(last.removeprefix("output: "))["summary"]["shout"] == "HELLO, ADA!"

    again = smithers(up, "run", "hello", "--input", '{"name": "ada"}', "--run-id", "hello-1")
    assert again.returncode == 0 and "already exists" in again.stdout
    other = smithers(up, "run", "hello", "--input", '{"name": "bob"}', "--run-id", "hello-1")
    assert other.returncode == 7 and "different workflow or input" in other.stderr


def test_approval_exits_three_then_approve_and_watch_finish_it(up: Path) -> None:
    waiting = smithers(up, "run", "approval-demo", "--run-id", "appr-1")
    assert waiting.returncode == 3, waiting.stdout + waiting.stderr
    assert "smithers approve appr-1 review" in waiting.stdout

    approve = smithers(up, "approve", "appr-1", "review", "--note", "ship it", "--as", "carol")
    assert approve.returncode == 0 and "approved by carol" in approve.stdout
    watch = smithers(up, "watch", "appr-1")
    assert watch.returncode == 0 and "approved by carol: ship it" in watch.stdout
    again = smithers(up, "approve", "appr-1", "review")
    assert again.returncode == 7 and "already decided" in again.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["run", "nope"], 6, "unknown workflow 'nope'"),
        (["run", "hello", "--input", "[1, 2]"], 2, "must be a JSON object"),
        (["run", "hello", "--input", "{oops"], 2, "not valid JSON"),
        (["run", "hello", "--run-id", "Not Valid"], 2, "must match"),
        (["run", "hello", "--input", '{"api_key": "sk-x"}'], 2, "input.api_key looks like a credential"),
        (["status", "no-such-run"], 6, "not found"),
    ],
)
def test_bad_input_is_a_clear_error_and_a_non_zero_exit(
    up: Path, args: list[str], code: int, message: str
) -> None:
    result = smithers(up, *args)
    assert result.returncode == code, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_run_without_a_running_up_says_so(tmp_path: Path) -> None:
    result = smithers(tmp_path, "run", "hello")
    assert result.returncode == 5
    assert "no `smithers up` is running" in result.stderr
    assert not (tmp_path / "smithers.db").exists()  # nothing written
