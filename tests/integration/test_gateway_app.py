"""The app factory as Flask and gunicorn users call it: ``flask --app smithers.gateway run``
and ``gunicorn "smithers.gateway:create_app()"``, configured from the environment alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.integration.gateway.support import ROOT, WORKFLOWS
from tests.integration.test_gateway_server import Server

pytestmark = pytest.mark.timeout(120)


def data_dir_env(data_dir: Path) -> dict[str, str]:
    """A single-node deployment known only from its data directory: no URL, no key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMITHERS_", "FLASK_"))}
    env.update(SMITHERS_DATA_DIR=str(data_dir), SMITHERS_WORKFLOWS=WORKFLOWS, PYTHONPATH=str(ROOT))
    return env


def serve(command: list[str], port: int, env: dict[str, str], log: Path) -> Server:
    proc = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    return Server(proc, port, log)


def healthz(server: Server, timeout_s: float = 30) -> dict[str, object]:
    deadline = time.time() + timeout_s
    while True:
        assert server.proc.poll() is None, server.output()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=2) as response:
                assert response.status == 200
                body: dict[str, object] = json.loads(response.read())
                return body
        except (urllib.error.URLError, OSError):  # refused, or a read timeout while the worker boots
            assert time.time() < deadline, server.output()
            time.sleep(0.1)


@pytest.mark.parametrize("runner", ["flask", "gunicorn"])
def test_the_factory_runs_under_flask_and_gunicorn_from_the_environment(tmp_path: Path, runner: str) -> None:
    # given a data directory and nothing else: the store and the signing key live in it
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    port = free_port()
    command = {
        "flask": [sys.executable, "-m", "flask", "--app", "smithers.gateway", "run", "--port", str(port)],
        "gunicorn": [
            sys.executable, "-m", "gunicorn", "smithers.gateway:create_app()",
            "-b", f"127.0.0.1:{port}", "--workers", "1",
        ],
    }[runner]  # fmt: skip

    # when the app is served the way Flask's and gunicorn's own docs say
    server = serve(command, port, data_dir_env(data_dir), tmp_path / f"{runner}.log")
    try:
        # then it answers, on a migrated store in the data directory, with a key made there
        assert healthz(server) == {"status": "ok"}
        assert (data_dir / "smithers.db").exists()
        assert (data_dir / "gateway.key").stat().st_mode & 0o777 == 0o600
    finally:
        server.stop()
