"""The sandbox worker's side of a sandbox step: bundles, container, record, review.

:func:`make_sandbox_runner` is called once when a worker that consumes the
``sandbox`` queue starts. It removes orphaned containers: those a previous process of
this worker left behind (labelled ``smithers.worker=<name>``), and any of this
deployment (``smithers.store=<store scope>``) whose attempt (``smithers.attempt``) the
store no longer holds running under a live lease, whichever worker started them,
since compose and Kubernetes give a recreated worker another name. The same sweep
runs before every sandbox attempt, so the orphan of a lost attempt goes at the latest
when its retry runs. It then returns the runner that
:func:`smithers.workers.step.run_attempt` calls for every sandbox attempt:

1. record the sandbox (``sandboxes`` row, ``sandbox.created``) and write the request
   bundle under ``<SMITHERS_SANDBOX_ROOT>/<run id>/<sandbox id>/request/``;
2. run the container (``sandbox.started`` once it runs) and collect the checked result
   bundle into ``.../result/``;
3. apply the step's patches to its workspace (its declared files), in memory, and
   write the proposed workspace to ``.../workspace/``;
4. record the result (``sandbox.finished``, or ``sandbox.failed`` and a raised error)
   and return the node's output: the manifest's outputs, the patches and the changed
   workspace files.

Patches are applied here, eagerly, because the sandbox worker is the only process
with the bundle on its disk; sandbox workers may live on hosts of their own. The
output carries the patched files, and the node is held for review (see
:mod:`smithers.shared.store.sandboxes`) so downstream nodes see it only once it is accepted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from smithers.shared import settings
from smithers.shared.bundle import (
    LOGS_FILENAME,
    RESULT_DIRNAME,
    BundleBounds,
    ResultManifest,
    ResultStatus,
    check_storable,
    collect_result_bundle,
    read_bundle_file,
    write_request_bundle,
    write_tree,
)
from smithers.shared.errors import BundleRejected, InvalidInput, SandboxError, SmithersError
from smithers.shared.patch import apply_patches
from smithers.shared.redaction import redact, redact_text
from smithers.shared.sandbox import SandboxSpec
from smithers.shared.store import sandboxes
from smithers.shared.store.inplace import Claim
from smithers.shared.workflow import Node
from smithers.workers.runtime import ContainerOutcome, SandboxRuntime, create_runtime
from smithers.workers.step import WorkerEnv

__all__ = [
    "SandboxConfig",
    "SandboxRunner",
    "make_sandbox_runner",
    "sandbox_id_for",
    "store_scope",
    "worker_label",
]

log = logging.getLogger("smithers.sandbox")

WORKSPACE_DIRNAME = "workspace"
LOG_TAIL_BYTES = 2000
_INLINE_LIMIT = (
    "patches and patched files exceed {} bytes, the bound on what a step hands downstream"
    " (SMITHERS_SANDBOX_MAX_INLINE_BYTES)"
)

RuntimeFactory = Callable[[str, "SandboxConfig"], SandboxRuntime]


def _volume_roots(raw: str) -> dict[str, bool]:
    """``/srv/data:ro,/srv/out:rw`` -> ``{"/srv/data": False, "/srv/out": True}``."""
    roots: dict[str, bool] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        path, _, mode = item.rpartition(":") if item.endswith((":ro", ":rw")) else (item, "", "ro")
        if not path.startswith("/"):
            raise InvalidInput(f"SMITHERS_SANDBOX_VOLUMES: {path!r} must be an absolute path")
        roots[path] = mode == "rw"
    return roots


@dataclass(frozen=True)
class SandboxConfig:
    """A sandbox worker's settings (each from ``SMITHERS_SANDBOX_*``; defaults below).

    ``runtime`` (``docker``): the backend. ``allowed_volume_roots``
    (``SMITHERS_SANDBOX_VOLUMES=/srv/data:ro,/srv/out:rw``, default none): host
    directories a step may mount, writable only when marked ``rw`` and asked for.
    ``work_size_mb`` (256): the tmpfs ``/work`` of each container. ``max_log_bytes``
    (1 MiB): step output kept in ``result/logs.txt``. ``proxy_image``: the egress proxy's.
    ``bounds``: the result bundle's limits (:class:`smithers.shared.bundle.BundleBounds`,
    ``SMITHERS_SANDBOX_MAX_*``).
    """

    runtime: str = settings.SANDBOX_RUNTIME.default
    allowed_volume_roots: Mapping[str, bool] = field(default_factory=dict)
    work_size_mb: int = settings.SANDBOX_WORK_MB.default
    max_log_bytes: int = settings.SANDBOX_MAX_LOG_BYTES.default
    proxy_image: str = settings.SANDBOX_PROXY_IMAGE.default
    bounds: BundleBounds = field(default_factory=BundleBounds)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SandboxConfig:
        """Read ``SMITHERS_SANDBOX_RUNTIME``, ``_VOLUMES``, ``_WORK_MB``, ``_MAX_LOG_BYTES``
        and the bundle bounds."""
        return cls(
            runtime=settings.SANDBOX_RUNTIME.read(environ),
            allowed_volume_roots=_volume_roots(settings.SANDBOX_VOLUMES.read(environ)),
            work_size_mb=settings.SANDBOX_WORK_MB.read(environ),
            max_log_bytes=settings.SANDBOX_MAX_LOG_BYTES.read(environ),
            proxy_image=settings.SANDBOX_PROXY_IMAGE.read(environ),
            bounds=BundleBounds.from_env(environ),
        )


def worker_label(worker_id: str) -> str:
    """The stable name a worker labels its containers with.

    ``--name`` when given; the default id ``<host>:<pid>`` becomes ``<host>`` so that
    the restarted process (another pid) still finds its predecessor's orphans. Two
    sandbox workers on one host therefore need distinct ``--name`` values.
    """
    host, _, pid = worker_id.rpartition(":")
    if pid == str(os.getpid()) and host == socket.gethostname():
        return host
    return worker_id


def store_scope(url: str) -> str:
    """A stable, password-free label for the store a deployment uses (16 hex digits)."""
    shown = make_url(url).render_as_string(hide_password=True)
    return hashlib.sha256(shown.encode()).hexdigest()[:16]


def _live(env: WorkerEnv) -> Callable[[Collection[str]], set[str]]:
    def live(attempt_ids: Collection[str]) -> set[str]:
        with env.store.read() as conn:
            return sandboxes.live_attempts(conn, attempt_ids, time.time())

    return live


def sandbox_id_for(attempt_id: str) -> str:
    """The sandbox id of an attempt: ``sbx-`` and the attempt's 32 hex digits."""
    try:
        return "sbx-" + uuid.UUID(attempt_id).hex
    except ValueError:
        raise InvalidInput(f"attempt id {attempt_id!r} is not a UUID") from None


def _default_runtime(label: str, config: SandboxConfig) -> SandboxRuntime:
    return create_runtime(
        config.runtime,
        label,
        allowed_volume_roots=config.allowed_volume_roots,
        bounds=config.bounds,
        work_size_mb=config.work_size_mb,
        max_log_bytes=config.max_log_bytes,
        proxy_image=config.proxy_image,
    )


def _limits(spec: SandboxSpec, config: SandboxConfig) -> dict[str, Any]:
    """What the sandbox record keeps of the spec: limits and names, never values."""
    return {
        "cpus": spec.cpus,
        "memory_mb": spec.memory_mb,
        "pids_limit": spec.pids_limit,
        "timeout_s": spec.timeout_s,
        "work_size_mb": config.work_size_mb,
        "allow_network": spec.allow_network,
        "network": spec.network,
        "egress": list(spec.egress),
        "ports": list(spec.ports),
        "volumes": [
            {"host_path": v.host_path, "container_path": v.container_path, "read_only": v.read_only}
            for v in spec.volumes
        ],
        "env": sorted(spec.env),
        "secrets": list(spec.secrets),
        "auto_accept_diffs": spec.auto_accept_diffs,
    }


def _tree_bytes(root: Path) -> int:
    total = 0
    for current, _, files in os.walk(root, followlinks=False):
        for name in files:
            total += os.lstat(Path(current) / name).st_size
    return total


def _log_tail(result_dir: Path) -> str:
    try:
        data = read_bundle_file(result_dir, LOGS_FILENAME, 1 << 30)
    except (SmithersError, OSError):
        return ""
    # "replace" leaves no lone surrogate; NUL is shown, not stored (PostgreSQL refuses it)
    return redact_text(data[-LOG_TAIL_BYTES:].decode("utf-8", "replace").replace("\x00", "\\0"))


class SandboxRunner:
    """Runs sandbox attempts for one worker; one runtime connection per process."""

    def __init__(self, label: str, config: SandboxConfig, factory: RuntimeFactory) -> None:
        self.label = label
        self.config = config
        self._factory = factory
        self._runtime: SandboxRuntime | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def runtime(self) -> SandboxRuntime:
        """This process's runtime (a forked pool child opens its own connection)."""
        with self._lock:
            if self._runtime is None or self._pid != os.getpid():
                self._runtime = self._factory(self.label, self.config)
                self._pid = os.getpid()
            return self._runtime

    def __call__(
        self, env: WorkerEnv, claim: Claim, node: Node, upstream: dict[str, Any], secrets: dict[str, str]
    ) -> dict[str, Any]:
        """Run one sandbox attempt and return the node's output (see the module doc)."""
        spec = node.sandbox
        if spec is None:
            raise SandboxError(f"node {node.id!r} has no sandbox spec")
        sandbox_id = sandbox_id_for(claim.attempt_id)
        root = env.config.sandbox_root
        try:
            removed = self.runtime().remove_orphans(store_scope(env.store.url), _live(env))
        except SmithersError as exc:
            log.warning("could not sweep orphaned sandboxes: %s", exc.message)
        else:
            if removed:
                log.warning("removed %d orphaned sandbox container(s)", removed)
        with env.store.write() as tx:
            sandboxes.create(
                tx,
                sandbox_id=sandbox_id,
                run_id=claim.run_id,
                node_id=claim.node_id,
                iteration=claim.iteration,
                attempt_id=claim.attempt_id,
                runtime=self.config.runtime,
                image=spec.image,
                limits=_limits(spec, self.config),
                bundle_path=str(root / claim.run_id / sandbox_id),
            )
        step = _Step(self, env, claim, spec, sandbox_id)
        try:
            return step.run(root, upstream, secrets)
        except Exception as exc:
            step.record_failure(exc)
            raise


class _Step:
    """One sandbox attempt in progress."""

    def __init__(
        self, runner: SandboxRunner, env: WorkerEnv, claim: Claim, spec: SandboxSpec, sandbox_id: str
    ) -> None:
        self.runner = runner
        self.env = env
        self.claim = claim
        self.spec = spec
        self.sandbox_id = sandbox_id
        self.bounds = runner.config.bounds
        self.request_bytes = 0
        self.result_bytes: int | None = None
        self.manifest: dict[str, Any] | None = None

    def started(self, container_id: str, image_digest: str) -> None:
        with self.env.store.write() as tx:
            sandboxes.started(
                tx,
                self.sandbox_id,
                container_id=container_id,
                image_digest=image_digest or None,
                request_bytes=self.request_bytes,
            )

    def run(self, root: Path, upstream: dict[str, Any], secrets: dict[str, str]) -> dict[str, Any]:
        c = self.claim
        sandbox_dir = write_request_bundle(
            root, c.run_id, self.sandbox_id, c.input, upstream, self.spec.files
        )
        self.request_bytes = _tree_bytes(sandbox_dir / "request")
        labels = {
            "smithers.run": c.run_id,
            "smithers.node": c.node_id,
            "smithers.attempt": c.attempt_id,
            "smithers.sandbox_id": self.sandbox_id,
            "smithers.store": store_scope(self.env.store.url),
        }
        outcome = self.runner.runtime().run(self.spec, sandbox_dir, labels, secrets, on_started=self.started)
        result_dir = sandbox_dir / RESULT_DIRNAME
        if outcome.exit_code != 0:
            tail = _log_tail(result_dir)
            raise SandboxError(
                f"sandbox step exited with code {outcome.exit_code}; last output: {tail[-500:]}"
            )
        manifest = collect_result_bundle(result_dir, self.bounds)
        self.result_bytes = manifest.total_bytes
        self.manifest = _record(manifest, outcome)
        if manifest.status is ResultStatus.FAILED:
            raise SandboxError("sandbox step reported status 'failed' in its manifest")
        diffs, changes = self.apply(result_dir, manifest)
        self.manifest["patches"] = [
            {**entry, "diff": diffs[entry["path"]]} for entry in self.manifest["patches"]
        ]
        self.manifest["workspace"] = {
            "changed": sorted(p for p, v in changes.items() if v is not None),
            "deleted": sorted(p for p, v in changes.items() if v is None),
        }
        workspace = dict(self.spec.files)
        for path, text in changes.items():
            if text is None:
                workspace.pop(path, None)
            else:
                workspace[path] = text
        write_tree(sandbox_dir / WORKSPACE_DIRNAME, workspace)
        with self.env.store.write() as tx:
            sandboxes.finished(
                tx,
                self.sandbox_id,
                manifest=self.manifest,
                result_bytes=manifest.total_bytes,
                patches=len(manifest.patches),
                auto_accept=self.spec.auto_accept_diffs,
            )
        return {
            "sandbox_id": self.sandbox_id,
            "outputs": redact(dict(manifest.outputs), keys=False),
            "patches": self.manifest["patches"],
            "artifacts": self.manifest["artifacts"],
            "workspace": {
                "files": {p: v for p, v in changes.items() if v is not None},
                "deleted": self.manifest["workspace"]["deleted"],
            },
            "duration_ms": round(outcome.duration_s * 1000),
        }

    def apply(
        self, result_dir: Path, manifest: ResultManifest
    ) -> tuple[dict[str, str], dict[str, str | None]]:
        """Read the patches (bounded) and apply them to the workspace, in memory."""
        budget = self.bounds.max_inline_bytes
        diffs: dict[str, str] = {}
        for entry in manifest.patches:
            name = f"patches/{entry.path}"
            if entry.size > budget:
                raise BundleRejected(f"{name}: {_INLINE_LIMIT.format(self.bounds.max_inline_bytes)}")
            data = read_bundle_file(result_dir, name, budget)
            budget -= len(data)
            try:
                diffs[entry.path] = data.decode("utf-8")
            except UnicodeDecodeError:
                raise BundleRejected(f"{name}: not UTF-8 text") from None
            check_storable(diffs[entry.path], name)
        changes = apply_patches(
            self.spec.files, [(f"patches/{p}", t) for p, t in diffs.items()], self.bounds.max_path_length
        )
        inline = sum(len(p.encode()) for p in diffs.values()) + sum(
            len(v.encode()) for v in changes.values() if v is not None
        )
        if inline > self.bounds.max_inline_bytes:
            changed = ", ".join(sorted(changes))[:200]
            raise BundleRejected(f"{changed}: {_INLINE_LIMIT.format(self.bounds.max_inline_bytes)}")
        return diffs, changes

    def record_failure(self, exc: Exception) -> None:
        """Mark the sandbox failed (``sandbox.failed``); never masks the step's error."""
        if isinstance(exc, SmithersError):
            error = {"code": exc.code, "type": type(exc).__name__, "message": redact_text(exc.message)}
        else:
            error = {
                "code": "sandbox_error",
                "type": type(exc).__name__,
                "message": redact_text(str(exc))[:2000],
            }
        try:
            with self.env.store.write() as tx:
                sandboxes.failed(
                    tx, self.sandbox_id, error=error, manifest=self.manifest, result_bytes=self.result_bytes
                )
        except SmithersError as store_exc:
            log.warning("sandbox %s: could not record its failure: %s", self.sandbox_id, store_exc.message)


def _record(manifest: ResultManifest, outcome: ContainerOutcome) -> dict[str, Any]:
    """The manifest as the sandbox row keeps it (outputs redacted by the store)."""
    return {
        "status": manifest.status.value,
        "outputs": dict(manifest.outputs),
        "patches": [{"path": p.path, "sha256": p.sha256, "size": p.size} for p in manifest.patches],
        "artifacts": [{"path": a.path, "sha256": a.sha256, "size": a.size} for a in manifest.artifacts],
        "exit_code": outcome.exit_code,
        "duration_s": round(outcome.duration_s, 3),
        "log_bytes": outcome.log_bytes,
    }


def make_sandbox_runner(
    env: WorkerEnv, config: SandboxConfig | None = None, factory: RuntimeFactory | None = None
) -> SandboxRunner:
    """Build the sandbox runner of a worker and remove its orphans (blocking, at start).

    ``config`` defaults to :meth:`SandboxConfig.from_env` of the process environment.
    Raises :class:`SandboxError` when the runtime's engine does not answer.
    """
    config = config or SandboxConfig.from_env(os.environ)
    factory = factory or _default_runtime
    label = worker_label(env.worker_id)
    runtime = factory(label, config)
    try:
        runtime.ping()
        removed = runtime.remove_orphans(store_scope(env.store.url), _live(env), label)
    finally:
        runtime.close()  # pool children fork after this; each opens its own connection
    if removed:
        log.warning("removed %d orphaned sandbox container(s) of worker %s", removed, label)
    return SandboxRunner(label, config, factory)
