"""The sandbox worker's runner (smithers.workers.sandbox) on a SQLite store with a stub runtime.

The stub plays the container: it reads the request bundle and writes a result
directory, as the Docker runtime does after copying ``/work/result`` out. Docker
itself is covered by test_docker_runtime.py and test_sandbox_engine.py.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from smithers.shared.broker import Broker
from smithers.shared.bundle import BundleBounds
from smithers.shared.config import WorkerConfig
from smithers.shared.errors import BundleRejected, SandboxError
from smithers.shared.sandbox import SandboxSpec
from smithers.shared.store import Store
from smithers.shared.store.queries import events_after
from smithers.shared.store.sandboxes import ReviewStatus, SandboxStatus, get_sandbox
from smithers.shared.workflow import Node, NodeKind
from smithers.workers.runtime import ContainerOutcome, LiveAttempts, OnStarted
from smithers.workers.sandbox import SandboxConfig, make_sandbox_runner, sandbox_id_for, worker_label
from smithers.workers.step import WorkerEnv
from tests.integration.test_sandbox_store import make_registry, start

pytestmark = pytest.mark.timeout(30)

PATCH = "--- a/greeting.txt\n+++ b/greeting.txt\n@@ -1 +1 @@\n-hello\n+hello, patched\n"
Step = Callable[[Path], int]


class StubRuntime:
    """Runs ``step(result_dir) -> exit code`` instead of a container."""

    name = "stub"

    def __init__(self, worker_id: str, step: Step) -> None:
        self.worker_id = worker_id
        self.step = step
        self.orphans_removed: list[str] = []
        self.labels: dict[str, str] = {}

    def ping(self) -> None:
        return None

    def remove_orphans(self, scope: str, live: LiveAttempts, worker_id: str | None = None) -> int:
        assert live([]) == set()
        self.orphans_removed.append(worker_id or "")
        return 0

    def run(
        self,
        spec: SandboxSpec,
        sandbox_dir: Path,
        labels: Mapping[str, str],
        secret_values: Mapping[str, str],
        on_started: OnStarted | None = None,
    ) -> ContainerOutcome:
        assert json.loads((sandbox_dir / "request" / "input.json").read_text())["upstream"] == {"up": 1}
        self.labels = dict(labels)
        if on_started is not None:
            on_started("c0ffee", "sha256:feed")
        result = sandbox_dir / "result"
        result.mkdir()
        (result / "patches").mkdir()
        (result / "artifacts").mkdir()
        code = self.step(result)
        (result / "logs.txt").write_text("step output\nlast line\n")
        return ContainerOutcome("c0ffee", "sha256:feed", code, False, 0.25, 22)

    def close(self) -> None:
        return None


def write(result: Path, manifest: dict[str, Any], patches: Mapping[str, str] = {}) -> None:
    for name, text in patches.items():
        (result / "patches" / name).write_text(text)
    (result / "manifest.json").write_text(json.dumps(manifest))


def proposes(patch: str) -> Step:
    def step(result: Path) -> int:
        write(
            result, {"status": "succeeded", "outputs": {"n": 1}, "patches": ["fix.diff"]}, {"fix.diff": patch}
        )
        return 0

    return step


@pytest.fixture
def store(sqlite_url: str) -> Store:
    st = Store(sqlite_url)
    st.migrate()
    return st


def run(
    store: Store, tmp_path: Path, step: Step, bounds: BundleBounds | None = None, auto: bool = False
) -> tuple[str, Any]:
    """Run one sandbox attempt through the runner; return (sandbox id, output or error)."""
    env = WorkerEnv(
        store,
        Broker("redis://127.0.0.1:1/0"),
        make_registry(),
        WorkerConfig(sandbox_root=tmp_path / "sandbox"),
        "sbx-test",
    )
    stubs: list[StubRuntime] = []

    def factory(label: str, config: SandboxConfig) -> StubRuntime:
        stubs.append(StubRuntime(label, step))
        return stubs[-1]

    runner = make_sandbox_runner(env, SandboxConfig(bounds=bounds or BundleBounds()), factory)
    assert stubs[0].orphans_removed == ["sbx-test"]
    claim = start(store, make_registry(), "run-1")
    spec = SandboxSpec(command=("true",), files={"greeting.txt": "hello\n"}, auto_accept_diffs=auto)
    node = Node("propose", NodeKind.SANDBOX, sandbox=spec)
    sandbox_id = sandbox_id_for(claim.attempt_id)
    try:
        outcome: Any = runner(env, claim, node, {"up": 1}, {})
    except SandboxError as exc:
        outcome = exc
    assert stubs[-1].labels["smithers.attempt"] == claim.attempt_id
    return sandbox_id, outcome


def kinds(store: Store) -> list[str]:
    with store.read() as conn:
        return [e.type for e in events_after(conn, "run-1", 0, 1000) if e.type.startswith("sandbox.")]


def test_patches_are_applied_to_the_workspace_and_recorded(store: Store, tmp_path: Path) -> None:
    sandbox_id, output = run(store, tmp_path, proposes(PATCH))

    assert output["workspace"] == {"files": {"greeting.txt": "hello, patched\n"}, "deleted": []}
    assert output["outputs"] == {"n": 1}
    assert [(p["path"], p["diff"]) for p in output["patches"]] == [("fix.diff", PATCH)]
    bundle = tmp_path / "sandbox" / "run-1" / sandbox_id
    assert (bundle / "workspace" / "greeting.txt").read_text() == "hello, patched\n"
    assert (bundle / "request" / "files" / "greeting.txt").read_text() == "hello\n"
    with store.read() as conn:
        record = get_sandbox(conn, "run-1", sandbox_id)
    assert (record.status, record.review_status) == (SandboxStatus.SUCCEEDED, ReviewStatus.REQUIRED)
    assert (record.container_id, record.image_digest) == ("c0ffee", "sha256:feed")
    assert record.request_bytes and record.result_bytes
    assert record.limits["allow_network"] is False and record.limits["secrets"] == []
    assert kinds(store) == ["sandbox.created", "sandbox.started", "sandbox.finished"]


def test_auto_accept_records_the_policy_as_the_reviewer(store: Store, tmp_path: Path) -> None:
    sandbox_id, _ = run(store, tmp_path, proposes(PATCH), auto=True)
    with store.read() as conn:
        assert get_sandbox(conn, "run-1", sandbox_id).review_status is ReviewStatus.ACCEPTED
    assert kinds(store)[-1] == "sandbox.reviewed"


def test_a_patch_that_does_not_apply_fails_the_step_naming_it(store: Store, tmp_path: Path) -> None:
    bad = PATCH.replace("-hello\n", "-goodbye\n")
    sandbox_id, error = run(store, tmp_path, proposes(bad))
    assert isinstance(error, BundleRejected)
    assert error.message == "patches/fix.diff: greeting.txt: hunk 1 does not apply"
    with store.read() as conn:
        record = get_sandbox(conn, "run-1", sandbox_id)
    assert record.status is SandboxStatus.FAILED
    assert record.error is not None and record.error["code"] == "bundle_rejected"
    assert kinds(store) == ["sandbox.created", "sandbox.started", "sandbox.failed"]


@pytest.mark.parametrize(
    ("step", "message"),
    [
        (lambda result: 3, "sandbox step exited with code 3; last output: step output\nlast line\n"),
        (lambda result: write(result, {"status": "failed"}) or 0, "reported status 'failed'"),
        (lambda result: 0, "manifest.json: does not exist in the bundle"),
        (
            lambda result: write(result, {"status": "succeeded", "patches": ["x"]}, {"x": "\xff"}) or 0,
            "not a unified diff",
        ),
    ],
)
def test_failures_are_recorded_and_raised(store: Store, tmp_path: Path, step: Step, message: str) -> None:
    sandbox_id, error = run(store, tmp_path, step)
    assert isinstance(error, SandboxError)
    assert message in error.message
    with store.read() as conn:
        assert get_sandbox(conn, "run-1", sandbox_id).status is SandboxStatus.FAILED


def test_inline_bound_names_its_setting(store: Store, tmp_path: Path) -> None:
    _, error = run(store, tmp_path, proposes(PATCH), bounds=BundleBounds(max_inline_bytes=32))
    assert isinstance(error, BundleRejected)
    assert error.message.startswith("patches/fix.diff: patches and patched files exceed 32 bytes")
    assert "SMITHERS_SANDBOX_MAX_INLINE_BYTES" in error.message


def test_config_and_names() -> None:
    config = SandboxConfig.from_env(
        {
            "SMITHERS_SANDBOX_VOLUMES": "/srv/data:ro, /srv/out:rw,/plain",
            "SMITHERS_SANDBOX_WORK_MB": "64",
            "SMITHERS_SANDBOX_MAX_PATCHES": "3",
        }
    )
    assert dict(config.allowed_volume_roots) == {"/srv/data": False, "/srv/out": True, "/plain": False}
    assert (config.work_size_mb, config.bounds.max_patches, config.runtime) == (64, 3, "docker")
    assert worker_label("sbx1") == "sbx1"
    assert worker_label(f"{socket.gethostname()}:{os.getpid()}") == socket.gethostname()
    assert sandbox_id_for("0b7ea23e-bcdc-7686-8000-000000000001") == "sbx-0b7ea23ebcdc76868000000000000001"
