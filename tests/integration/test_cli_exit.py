"""The ``smithers`` command ends quietly: a closed pipe and Ctrl-C print no traceback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def closed_pipe_run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``smithers <args>`` with stdout a pipe whose reader is already gone (`| head -0`)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "smithers", *args],
            cwd=ROOT, env=env, stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write_end)


def test_a_closed_pipe_ends_with_141_and_no_traceback(engine_factory: Any, sqlite_url: str) -> None:
    # given a run in a store
    engine = engine_factory(sqlite_url)
    run_id = engine.launch("t-chain")
    # when `smithers status RUN --json` and `smithers config --markdown` write to a closed pipe
    for args in (("status", run_id, "--json"), ("config", "--markdown")):
        result = closed_pipe_run(engine.env, *args)
        # then they end quietly with 141 (128 + SIGPIPE, what a shell shows for `yes | head`)
        assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
        assert result.returncode == 141, (args, result.returncode, result.stderr)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_smithers_up_quietly(tmp_path: Path, sig: signal.Signals) -> None:
    # given `smithers up` serving (tmp data directory, no sandbox worker, a free port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMITHERS_")}
    env.update(SMITHERS_WORKFLOWS="smithers.examples.hello", PYTHONPATH=str(ROOT))
    port = free_port()
    data = tmp_path / "data"
    argv = ["up", "--data-dir", str(data), "--sandbox", "off", "--port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "smithers", *argv],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None and time.time() < deadline, proc.communicate(timeout=10)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        # when the terminal's Ctrl-C (SIGINT to its process group), or a SIGTERM, arrives
        os.killpg(proc.pid, sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    # then it ends with 0 or 130, nothing on stderr, and its children stopped in order
    assert proc.returncode in (0, 130), (proc.returncode, err)
    assert "Traceback" not in err and "Traceback" not in out, err
    assert err.strip() == "", err
    assert not (data / "broker.json").exists()
    for log in (data / "logs").glob("*.log"):
        assert "Traceback" not in log.read_text(), log.read_text()
