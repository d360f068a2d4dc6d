"""Sandbox steps through the real engine: scheduler, a step worker and a sandbox worker
as subprocesses, a private Redis, a SQLite file and a real Docker engine.

Needs the ``smithers-sandbox:latest`` image (``.ci/docker-setup.sh``); without Docker
the tests skip, unless ``CI=true``, where they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from docker.client import DockerClient

from smithers.gateway.app import create_app
from smithers.gateway.auth import mint
from smithers.gateway.config import GatewayConfig
from smithers.gateway.services import services
from smithers.shared.registry import load_registry
from smithers.shared.status import AttemptState, NodeStatus, RunStatus
from smithers.shared.store.queries import attempts_of, nodes_of
from smithers.shared.store.sandboxes import ReviewStatus, SandboxStatus, sandboxes_of
from tests.conftest import CI
from tests.integration.conftest import ROOT, Engine

pytestmark = pytest.mark.timeout(180)

WORKFLOWS = "tests.integration.sandbox_workflows,smithers.examples.sandbox_review"
IMAGE = "smithers-sandbox:latest"


@pytest.fixture(scope="module")
def docker_client() -> DockerClient:
    """A live engine with the sandbox image, or a skip (a failure under CI=true)."""
    try:
        client = DockerClient.from_env(timeout=30)
        client.ping()
        client.images.get(IMAGE)
    except docker.errors.DockerException as exc:
        problem = f"Docker engine with {IMAGE} not available ({type(exc).__name__}): run .ci/docker-setup.sh"
        if CI:
            pytest.fail(problem)
        pytest.skip(problem)
    return client


def containers_of(client: DockerClient, worker: str) -> list[Any]:
    return list(client.containers.list(all=True, filters={"label": [f"smithers.worker={worker}"]}))


def make_engine(database_url: str, redis_url: str, workdir: Path, **env: str) -> Engine:
    eng = Engine(database_url, redis_url, workdir, {"SMITHERS_WORKFLOWS": WORKFLOWS, **env})
    eng.registry = load_registry(WORKFLOWS, str(ROOT))
    return eng


def start_worker(eng: Engine, name: str, queues: str, concurrency: int = 1) -> None:
    """Start a worker and wait until Celery says it is ready (its queue is declared)."""
    log = eng.logs / f"{name}.log"
    seen = log.read_text().count(" ready.") if log.exists() else 0
    eng.worker(name, queues, concurrency=concurrency)
    deadline = time.time() + 60
    while time.time() < deadline:
        if log.exists() and log.read_text().count(" ready.") > seen:
            return
        if eng.procs[name].poll() is not None:
            pytest.fail(f"worker {name} exited: see {log}")
        time.sleep(0.1)
    pytest.fail(f"worker {name} not ready after 60 s: see {log}")


def cleanup(eng: Engine, client: DockerClient, worker: str) -> list[str]:
    """Stop the processes; remove and report anything left with the worker's label."""
    eng.stop_all()
    eng.broker.close()
    eng.store.close()
    left = containers_of(client, worker)
    for container in left:
        container.remove(force=True)
    for volume in client.volumes.list(filters={"label": [f"smithers.worker={worker}"]}):
        volume.remove(force=True)
    return [c.name for c in left]


@pytest.fixture(scope="module")
def engine(
    docker_client: DockerClient, redis_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Engine, str]]:
    """Scheduler, a step worker and a sandbox worker (bundle bound 1 MiB), for the module.

    Its Redis database is its own: the tests below that start an engine of their own
    use the private server's database 0 (``redis_url``) while this one still runs, and
    workers of two engines on one queue take each other's messages (a message for an
    attempt of the other store is dropped, so a retry could reach the wrong worker)."""
    workdir = tmp_path_factory.mktemp("sandbox-engine")
    eng = make_engine(
        f"sqlite:///{workdir / 'smithers.db'}",
        f"{redis_server.rsplit('/', 1)[0]}/1",
        workdir,
        SMITHERS_SANDBOX_MAX_BUNDLE_BYTES=str(1 << 20),
    )
    worker = f"sbx-{uuid.uuid4().hex[:10]}"
    eng.scheduler()
    start_worker(eng, "steps", "steps")
    start_worker(eng, worker, "sandbox", concurrency=2)
    yield eng, worker
    assert cleanup(eng, docker_client, worker) == []


def cli(eng: Engine, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smithers", *args],
        env=eng.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_patch_waits_for_review_then_is_applied_and_used_downstream(engine: tuple[Engine, str]) -> None:
    eng, _ = engine
    # given a run whose sandbox step proposes a patch
    run_id = eng.launch("t-sbx-review")

    # then the run waits for a review, and the proposal is listed with its diff
    assert eng.wait(run_id, 90, until={RunStatus.WAITING, RunStatus.FAILED}).status is RunStatus.WAITING
    listed = cli(eng, "sandboxes", run_id, "--json")
    assert listed.returncode == 0, listed.stderr
    (record,) = json.loads(listed.stdout)
    assert (record["node_id"], record["status"], record["review_status"]) == (
        "propose",
        "succeeded",
        "pending",
    )
    assert record["image_digest"].startswith("sha256:") and record["container_id"]
    assert record["limits"]["allow_network"] is False and record["limits"]["memory_mb"] == 256
    (patch,) = record["manifest"]["patches"]
    assert patch["path"] == "0001-greeting.patch"
    assert "+hello, reviewed world" in patch["diff"]
    assert record["manifest"]["workspace"] == {"changed": ["greeting.txt", "notes/new.txt"], "deleted": []}
    bundle = Path(record["bundle_path"])
    assert (bundle / "request" / "files" / "greeting.txt").read_text() == "hello\n"
    assert (bundle / "result" / "manifest.json").is_file()
    assert (bundle / "workspace" / "greeting.txt").read_text() == "hello, reviewed world\n"

    # when a reviewer accepts it from the command line
    done = cli(eng, "review", run_id, "propose", "--accept", "--note", "ship it", "--as", "carol")
    assert done.returncode == 0, done.stderr

    # then the patched workspace reaches the downstream node and the run succeeds
    run = eng.wait(run_id, 60)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert run.output == {
        "use": {
            "greeting": "hello, reviewed world\n",
            "new": "written in a sandbox\n",
            "summary": "greeting updated",
        }
    }
    kinds = [e.type for e in eng.events(run_id)]
    for kind in (
        "sandbox.created",
        "sandbox.started",
        "sandbox.finished",
        "review.requested",
        "sandbox.reviewed",
    ):
        assert kind in kinds
    reviewed = next(e for e in eng.events(run_id) if e.type == "sandbox.reviewed")
    assert (reviewed.payload["decided_by"], reviewed.payload["note"]) == ("carol", "ship it")


def test_example_is_reviewed_over_rest_then_applied_and_used_downstream(engine: tuple[Engine, str]) -> None:
    eng, _ = engine
    app = create_app(
        GatewayConfig(database_url=eng.database_url, redis_url=eng.redis_url, signing_key="k" * 64),
        registry=eng.registry,
    )
    client = app.test_client()
    try:
        with app.app_context():
            grant = services().control.issue(
                subject="carol", scopes="approval:read,approval:submit", issuer="smithers", actor="test"
            )
            headers = {"Authorization": f"Bearer {mint(grant)}"}
        # given the example's run, waiting for a review of its proposed patch
        run_id = eng.launch("sandbox-review", {"version": "0.2.0"})
        assert eng.wait(run_id, 90, until={RunStatus.WAITING, RunStatus.FAILED}).status is RunStatus.WAITING
        listed = client.get(f"/v1/runs/{run_id}/sandboxes?review_status=pending", headers=headers)
        (sandbox,) = listed.get_json()["sandboxes"]
        assert '+__version__ = "0.2.0"' in sandbox["manifest"]["patches"][0]["diff"]

        # when it is accepted over REST
        url = f"/v1/runs/{run_id}/sandboxes/{sandbox['sandbox_id']}/review"
        reviewed = client.post(url, json={"accept": True, "note": "ship 0.2.0"}, headers=headers)
        assert reviewed.status_code == 200, reviewed.get_json()

        # then the patched workspace is what the downstream task used
        run = eng.wait(run_id, 60)
        assert run.status is RunStatus.SUCCEEDED, run.error
        assert run.output == {
            "release": {"version": "0.2.0", "changelog_head": "## 0.2.0", "patches": ["bump-version.patch"]}
        }
    finally:
        with app.app_context():
            services().close()


def test_rejection_fails_or_skips_and_auto_accept_does_not_wait(engine: tuple[Engine, str]) -> None:
    eng, _ = engine
    # given three runs: one to reject, one to reject with on_reject="skip", one auto-accepted
    rejected, skipped, auto = (eng.launch(w) for w in ("t-sbx-review", "t-sbx-review-skip", "t-sbx-auto"))

    # when the first two are rejected
    for run_id in (rejected, skipped):
        assert eng.wait(run_id, 90, until={RunStatus.WAITING}).status is RunStatus.WAITING
        done = cli(eng, "review", run_id, "propose", "--reject", "--note", "not this", "--as", "dave")
        assert done.returncode == 0, done.stderr

    # then one fails, one skips its downstream, and the auto-accepted one never waited
    assert eng.wait(rejected, 60).status is RunStatus.FAILED
    assert eng.wait(rejected, 60).error["code"] == "review_rejected"  # type: ignore[index]
    assert eng.wait(skipped, 60).status is RunStatus.SUCCEEDED
    with eng.store.read() as conn:
        assert {n.node_id: n.status for n in nodes_of(conn, skipped)} == {
            "propose": NodeStatus.SKIPPED,
            "use": NodeStatus.SKIPPED,
        }
        (auto_record,) = sandboxes_of(conn, auto)
    assert eng.wait(auto, 60).status is RunStatus.SUCCEEDED
    assert auto_record.review_status is ReviewStatus.ACCEPTED
    assert RunStatus.WAITING.value not in {e.type.removeprefix("run.") for e in eng.events(auto)}
    again = cli(eng, "review", rejected, "propose", "--accept")
    assert again.returncode != 0 and "sandbox" in again.stderr


def test_limits_and_bundle_rules_fail_the_step_naming_the_cause(engine: tuple[Engine, str]) -> None:
    eng, _ = engine
    # given a run whose sandbox steps each break one rule (continue_on_fail on each)
    started = time.monotonic()
    run_id = eng.launch("t-sbx-limits")

    # when it settles
    run = eng.wait(run_id, 150)

    # then every step failed with an error that names the limit or the path
    assert run.status is RunStatus.SUCCEEDED
    with eng.store.read() as conn:
        nodes = {n.node_id: n for n in nodes_of(conn, run_id)}
        records = {r.node_id: r for r in sandboxes_of(conn, run_id)}
    errors = {k: (n.error or {}) for k, n in nodes.items()}
    assert nodes["network"].status is NodeStatus.SUCCEEDED
    assert run.output["network"]["outputs"] == {"network": "unreachable"}  # type: ignore[index]
    assert errors["oom"]["code"] == "sandbox_oom" and "32 MB" in errors["oom"]["message"]
    assert errors["pids"]["code"] in ("sandbox_timeout", "sandbox_error")
    assert errors["write_outside"]["code"] == "sandbox_error"
    assert "Read-only file system" in errors["write_outside"]["message"]
    assert errors["traversal"]["code"] == "bundle_rejected" and "'..'" in errors["traversal"]["message"]
    assert "patches/p.diff: symbolic link points outside the bundle" in errors["symlink"]["message"]
    assert "artifacts/b: is a hard link" in errors["hardlink"]["message"]
    assert "artifacts/big.bin: result bundle exceeds" in errors["oversize"]["message"]
    for node_id in ("oom", "pids", "write_outside", "traversal", "symlink", "hardlink", "oversize"):
        assert nodes[node_id].status is NodeStatus.FAILED, node_id
        assert records[node_id].status is SandboxStatus.FAILED
        assert records[node_id].error is not None
    assert time.monotonic() - started < 150
    assert not (Path(records["oversize"].bundle_path) / "result" / "artifacts" / "big.bin").exists()


def test_kill_9_of_the_sandbox_worker_leaves_no_container_and_the_step_is_retried(
    docker_client: DockerClient, redis_url: str, tmp_path: Path
) -> None:
    eng = make_engine(
        f"sqlite:///{tmp_path / 'smithers.db'}", redis_url, tmp_path, SMITHERS_LEASE_SECONDS="3"
    )
    worker = f"sbx-kill-{uuid.uuid4().hex[:8]}"
    try:
        eng.scheduler()
        start_worker(eng, "steps", "steps")
        start_worker(eng, worker, "sandbox")
        # given a sandbox step whose container is running
        run_id = eng.launch("t-sbx-slow")
        started = eng.wait_event(run_id, lambda e: e.type == "sandbox.started", timeout=60)
        container_id = started.payload["container_id"]
        assert docker_client.containers.get(container_id).status == "running"

        # when the sandbox worker's process group is killed, the container is orphaned
        eng.kill9(worker)
        assert docker_client.containers.get(container_id).labels["smithers.worker"] == worker

        # and the worker is rescheduled under another name (compose and Helm do not keep it)
        successor = f"{worker}-next"
        eng.worker(successor, "sandbox", concurrency=1)

        # then the successor removes the orphan once its attempt is lost (at the latest
        # when it runs the retry), matched by the attempt, not by the worker's name
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                docker_client.containers.get(container_id)
            except docker.errors.NotFound:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"orphan {container_id[:12]} still exists; logs in {eng.logs}")

        # and the step is retried and the run finishes
        run = eng.wait(run_id, 90)
        assert run.status is RunStatus.SUCCEEDED, run.error
        assert run.output == {"after_slow": {"slept": 4}}
        with eng.store.read() as conn:
            states = [a.state for a in attempts_of(conn, run_id) if a.node_id == "slow"]
            states_ids = [a.attempt_id for a in attempts_of(conn, run_id) if a.node_id == "slow"]
            records = sandboxes_of(conn, run_id)
        assert states[0] is AttemptState.LOST and states[-1] is AttemptState.SUCCEEDED
        assert [r.status for r in records] == [SandboxStatus.LOST] * (len(records) - 1) + [
            SandboxStatus.SUCCEEDED
        ]
        assert "removed 1 orphaned sandbox container" in (eng.logs / f"{successor}.log").read_text()
        assert not docker_client.volumes.list(filters={"label": [f"smithers.attempt={states_ids[0]}"]})
    finally:
        left = cleanup(eng, docker_client, worker)
        for container in containers_of(docker_client, f"{worker}-next"):
            left.append(container.name)
            container.remove(force=True)
    assert left == []
    assert os.path.isdir(tmp_path / "sandbox" / run_id)


def test_attacks_fail_their_step_and_leave_no_record_running_on_postgres(
    docker_client: DockerClient, redis_url: str, pg_url: str, tmp_path: Path
) -> None:
    # given a sandbox worker on PostgreSQL whose environment holds its store's URL,
    # an unlisted variable and an injectable secret
    eng = make_engine(
        pg_url, redis_url, tmp_path, HOME_TOKEN="unlisted-7f3a", SMITHERS_SECRET_API="injectable-9c1d"
    )
    worker = f"sbx-attacks-{uuid.uuid4().hex[:8]}"
    try:
        eng.scheduler()
        start_worker(eng, "steps", "steps")
        start_worker(eng, worker, "sandbox")

        # when steps ask for the worker's configuration, or hand back strings the store refuses
        run_id = eng.launch("t-sbx-attacks")
        run = eng.wait(run_id, 120)

        # then each such step failed with a clear error; none is stuck running or marked lost
        assert run.status is RunStatus.SUCCEEDED, run.error
        with eng.store.read() as conn:
            nodes = {n.node_id: n for n in nodes_of(conn, run_id)}
            records = {r.node_id: r for r in sandboxes_of(conn, run_id)}
            attempts = attempts_of(conn, run_id)
        errors = {k: (n.error or {}).get("message", "") for k, n in nodes.items()}
        assert "worker configuration" in errors["config_secret"]
        assert "not allowed for injection" in errors["unlisted_secret"]
        assert nodes["allowed_secret"].status is NodeStatus.SUCCEEDED
        assert run.output["allowed_secret"]["outputs"] == {"len": len("injectable-9c1d")}  # type: ignore[index]
        for node_id, what in (("nul", "a NUL character"), ("surrogate", "a lone UTF-16 surrogate")):
            assert f"contains {what}" in errors[node_id], errors[node_id]
            assert records[node_id].status is SandboxStatus.FAILED
        assert "exited with code 3" in errors["nul_log"] and "before\\0after" in errors["nul_log"]
        assert records["nul_log"].status is SandboxStatus.FAILED
        assert "config_secret" not in records and "unlisted_secret" not in records  # never started
        assert all(a.state is not AttemptState.LOST for a in attempts)
        assert all(a.number == 1 for a in attempts)
    finally:
        left = cleanup(eng, docker_client, worker)
    assert left == []
