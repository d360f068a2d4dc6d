"""compose.yaml end to end: bring the stack up on locally built images, drive runs over
REST with scoped tokens, watch Flower, take everything down.

Images come from .ci/build-images.sh (no registry needed), except the sandbox image,
which compose builds itself (the operator's path). Every docker-compose call gets an
empty ``--env-file``, so a developer's ``.env`` never leaks into a test. Skips when
docker-compose or a Docker engine is missing; under CI=true that fails instead.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, missing

ROOT = Path(__file__).resolve().parents[2]
SOCKET = Path("/var/run/docker.sock")
UP_TIMEOUT_S = 300
STEP_TIMEOUT_S = 90

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]
BASE_ENV = {"POSTGRES_PASSWORD": "pg-pw", "SMITHERS_JWT_SECRET": "j" * 40, "SMITHERS_FLOWER_PASSWORD": "fl"}


def compose(
    env: dict[str, str], *args: str, file: Path = ROOT / "compose.yaml", timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """``docker-compose -f FILE ARGS`` with only ``env``: an empty --env-file, never .env."""
    if shutil.which("docker-compose") is None:
        missing("docker-compose (apt-get install docker-compose)")
    empty = file.parent / ".compose-test-empty.env"
    empty.write_text("")
    try:
        return subprocess.run(
            ["docker-compose", "--env-file", str(empty), "-f", str(file), *args],
            cwd=file.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    finally:
        empty.unlink(missing_ok=True)


def _plain_env(**extra: str) -> dict[str, str]:
    keep = ("PATH", "HOME", "DOCKER_HOST", "LANG")
    return {**{k: v for k, v in os.environ.items() if k in keep}, **BASE_ENV, **extra}


@dataclass
class Stack:
    """A running compose project and how to reach it."""

    project: str
    env: dict[str, str]
    gateway: str
    flower: str
    flower_auth: tuple[str, str]
    tokens: dict[str, str] = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        """``docker-compose -p PROJECT ARGS`` in the repository; returns stdout."""
        done = compose(self.env, "-p", self.project, *args, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def token(self, subject: str, scopes: str) -> str:
        """A token issued by ``smithers token issue`` inside the gateway container."""
        out = self.compose(
            "exec",
            "-T",
            "gateway",
            "smithers",
            "token",
            "issue",
            "--subject",
            subject,
            "--scopes",
            scopes,
            "--ttl",
            "15m",
        )
        return out.strip().splitlines()[-1]

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "40", timeout=60, check=False)


def http(
    method: str,
    url: str,
    body: Any = None,
    *,
    bearer: str | None = None,
    basic: tuple[str, str] | None = None,
) -> tuple[int, Any]:
    """One request; returns the status and the decoded JSON body (or None)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if bearer:
        request.add_header("Authorization", f"Bearer {bearer}")
    if basic:
        request.add_header("Authorization", "Basic " + b64encode(f"{basic[0]}:{basic[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = STEP_TIMEOUT_S) -> Any:
    """Poll ``predicate`` until it returns something truthy; bounded."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


def _engine_ok() -> bool:
    try:
        return (
            subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def _build_images() -> dict[str, str]:
    """Build (or refresh, from the layer cache) the three images; returns their names."""
    done = subprocess.run(
        ["bash", str(ROOT / ".ci" / "build-images.sh")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"building images failed:\n{done.stderr[-3000:]}")
    names = dict(line.split("=", 1) for line in done.stdout.split() if "=" in line)
    return {k: v for k, v in names.items() if k.startswith("SMITHERS_")}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if shutil.which("docker-compose") is None:
        missing("docker-compose (apt-get install docker-compose)")
    if shutil.which("docker") is None or not _engine_ok():
        missing("a Docker engine")
    images = _build_images()
    flower_auth = ("ops", secrets.token_urlsafe(18))
    gateway_port, flower_port = free_port(), free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SMITHERS_", "POSTGRES_", "COMPOSE_"))},
        **images,
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
        "SMITHERS_JWT_SECRET": secrets.token_urlsafe(48),
        "SMITHERS_FLOWER_USER": flower_auth[0],
        "SMITHERS_FLOWER_PASSWORD": flower_auth[1],
        "SMITHERS_GATEWAY_PORT": str(gateway_port),
        "SMITHERS_FLOWER_PORT": str(flower_port),
        "SMITHERS_DEPLOYMENT_VERSION": "e2e",
        "DOCKER_GID": str(SOCKET.stat().st_gid) if SOCKET.exists() else "0",
        # compose builds the sandbox image itself, under a tag of the test's own
        "SMITHERS_SANDBOX_IMAGE": f"smithers-sandbox:e2e-{os.getpid()}",
        "SMITHERS_SANDBOX_BASE_IMAGE": os.environ.get("SMITHERS_SANDBOX_BASE_IMAGE", _sandbox_base()),
    }
    project = f"smithers-e2e-{os.getpid()}"
    s = Stack(
        project, env, f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{flower_port}", flower_auth
    )
    try:
        s.compose("build", "sandbox-image", timeout=UP_TIMEOUT_S)
        s.compose("up", "-d", "--no-build", timeout=UP_TIMEOUT_S)
        try:
            wait_for("gateway ready", lambda: http("GET", f"{s.gateway}/readyz")[0] == 200, UP_TIMEOUT_S)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{s.logs()}") from None
        yield s
    finally:
        s.compose("down", "-v", "--remove-orphans", "--timeout", "20", timeout=180, check=False)
        subprocess.run(["docker", "rmi", env["SMITHERS_SANDBOX_IMAGE"]], capture_output=True, check=False)


def _sandbox_base() -> str:
    """python:3.11-slim when the engine has it, else the debootstrapped local base."""
    found = subprocess.run(
        ["docker", "image", "inspect", "python:3.11-slim"], capture_output=True, check=False
    )
    return "python:3.11-slim" if found.returncode == 0 else "smithers-base:bookworm"


def test_a_developers_env_file_is_not_read(tmp_path: Path) -> None:
    # given a checkout whose .env holds a developer's own password
    (tmp_path / "compose.yaml").write_text((ROOT / "compose.yaml").read_text())
    (tmp_path / "docker").mkdir()  # the sandbox image's build context
    (tmp_path / ".env").write_text("POSTGRES_PASSWORD=a-developers-own-password\n")
    # when the tests render the stack
    done = compose(_plain_env(DOCKER_GID="999"), "config", file=tmp_path / "compose.yaml")
    # then only the test's own values are used
    assert done.returncode == 0, done.stderr
    assert "a-developers-own-password" not in done.stdout
    assert "smithers:pg-pw@postgres" in done.stdout


def test_env_is_git_ignored_and_docker_gid_is_required() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, check=False)
    assert ignored.returncode == 0, ".env (JWT, database and Flower secrets) must be git-ignored"
    done = compose(_plain_env(), "config")
    assert done.returncode != 0
    assert "set DOCKER_GID to the group of the Docker socket" in done.stderr


def test_every_service_is_hardened_and_the_sandbox_image_is_built() -> None:
    import yaml

    done = compose(_plain_env(DOCKER_GID="999"), "config")
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    for name, service in services.items():
        assert service.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert service.get("mem_limit") and service.get("pids_limit"), name
        assert service["logging"] == {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}
    image = services["sandbox-image"]
    assert image["image"] == "smithers-sandbox:latest"
    assert image["build"]["dockerfile"] == "sandbox.Dockerfile"
    assert services["sandbox-worker"]["depends_on"]["sandbox-image"] == {
        "condition": "service_completed_successfully"
    }
    assert services["sandbox-worker"]["group_add"] == ["999"]


def _run(stack: Stack, run_id: str, token: str) -> dict[str, Any]:
    status, body = http("GET", f"{stack.gateway}/v1/runs/{run_id}", bearer=token)
    assert status == 200, body
    return dict(body["run"])


def _settles(stack: Stack, run_id: str, token: str, wanted: str) -> dict[str, Any]:
    try:
        return dict(
            wait_for(
                f"run {run_id} {wanted}", lambda: (r := _run(stack, run_id, token))["status"] == wanted and r
            )
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.logs()}") from None


def test_approval_demo_over_rest_with_separate_launch_and_approval_tokens(stack: Stack) -> None:
    # given a launcher (run:read,run:write) and an approver (approval:submit), issued in the gateway
    launcher = stack.token("e2e-launcher", "run:read,run:write")
    approver = stack.token("e2e-approver", "run:read,approval:read,approval:submit")

    # when the launcher starts approval-demo over REST
    status, body = http(
        "POST",
        f"{stack.gateway}/v1/runs",
        {"workflow": "approval-demo", "input": {"version": "9.9.9"}},
        bearer=launcher,
    )
    assert status == 201, body
    run_id = body["run_id"]
    _settles(stack, run_id, launcher, "waiting")

    # then the launcher cannot approve, the approver can, and the run finishes
    status, body = http(
        "POST",
        f"{stack.gateway}/v1/runs/{run_id}/approvals/review",
        {"approved": True, "note": "ship it"},
        bearer=launcher,
    )
    assert status == 403, body
    status, body = http(
        "POST",
        f"{stack.gateway}/v1/runs/{run_id}/approvals/review",
        {"approved": True, "note": "ship it"},
        bearer=approver,
    )
    assert status == 200, body
    assert body["decided_by"] == "e2e-approver"
    run = _settles(stack, run_id, launcher, "succeeded")
    assert run["output"] == {"publish": {"published": True, "approved_by": "e2e-approver"}}
    assert run["deployment_version"] == "e2e"
    assert http("GET", f"{stack.gateway}/v1/runs/{run_id}")[0] == 401  # no token, no run

    # and the store-derived metrics count it, on the gateway's /metrics and `smithers metrics`
    with urllib.request.urlopen(f"{stack.gateway}/metrics", timeout=10) as response:
        scraped = response.read().decode()
    printed = stack.compose("exec", "-T", "gateway", "smithers", "metrics")
    for text in (scraped, printed):
        assert 'smithers_runs{status="succeeded",workflow="approval-demo"} 1.0' in text
        assert "smithers_broker_up 1.0" in text
        assert 'smithers_queue_depth{queue="steps"}' in text


def test_sandbox_step_runs_in_docker_from_the_sandbox_worker_container(stack: Stack) -> None:
    launcher = stack.token("e2e-launcher", "run:read,run:write")
    reviewer = stack.token("e2e-reviewer", "run:read,approval:read,approval:submit")

    status, body = http(
        "POST",
        f"{stack.gateway}/v1/runs",
        {"workflow": "sandbox-review", "input": {"version": "0.3.0"}},
        bearer=launcher,
    )
    assert status == 201, body
    run_id = body["run_id"]
    _settles(stack, run_id, launcher, "waiting")

    status, body = http("GET", f"{stack.gateway}/v1/runs/{run_id}/sandboxes", bearer=reviewer)
    assert status == 200, body
    (sandbox,) = body["sandboxes"]
    assert sandbox["status"] == "succeeded" and sandbox["review_status"] == "pending"
    status, body = http(
        "POST",
        f"{stack.gateway}/v1/runs/{run_id}/sandboxes/{sandbox['sandbox_id']}/review",
        {"accept": True, "note": "looks right"},
        bearer=reviewer,
    )
    assert status == 200, body
    _settles(stack, run_id, launcher, "succeeded")


def test_flower_shows_both_workers_and_refuses_unauthenticated_access(stack: Stack) -> None:
    for path in ("/", "/workers", "/broker", "/api/workers"):
        assert http("GET", f"{stack.flower}{path}")[0] == 401, path
    assert http("GET", f"{stack.flower}/api/workers", basic=(stack.flower_auth[0], "wrong"))[0] == 401

    def queues() -> set[str] | None:
        _, workers = http("GET", f"{stack.flower}/api/workers?refresh=1", basic=stack.flower_auth)
        seen = {q["name"] for info in (workers or {}).values() for q in info.get("active_queues") or []}
        return seen if {"steps", "sandbox"} <= seen else None

    assert wait_for("both workers in Flower", queues) >= {"steps", "sandbox"}
