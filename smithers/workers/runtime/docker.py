"""Run sandbox steps in Docker containers (docker SDK >= 7).

How ``/work`` works, and why (verified on Docker 20.10, cgroup v1, overlay2):

- A container's own tmpfs mount (``tmpfs={"/work": ...}``) exists only inside the
  container's mount namespace. ``put_archive`` into it is refused on a created
  container ("container rootfs is marked read-only"), and the daemon cannot see it in
  a running one, so neither the request nor the result could cross it.
- A tmpfs-backed *named volume* is mounted by the daemon on the host while a container
  uses it, so ``put_archive``/``get_archive`` reach it while the container runs. It is
  unmounted, and its content lost, as soon as the container stops.
- A plain named volume survives a stop but lives on the host's disk, unbounded.

So each sandbox gets a size-bounded tmpfs volume (uid 10001, mode 0700, nosuid,
nodev) at ``/work``, and the container's main process is only a holder (``sleep``
under docker-init, as ``nobody``) that keeps the volume mounted. The step runs as
uid 10001, so it cannot reach the holder's stdout through ``/proc/1/fd/1`` (the
container's log file on the host, capped at 1 MiB anyway). Once it runs, the request is copied
into ``/work/request``; the step runs as an *exec* in that container (same cgroup
limits, its own user, no capabilities, no new privileges, exit code reported by the
daemon); when it exits the container is paused (a consistent snapshot even if the step
left background processes), ``/work/result`` is copied out and extracted member by
member by :func:`smithers.shared.bundle_archive.extract_result_archive`, then the container is killed
and ``State.OOMKilled`` read. The root filesystem is read-only, so every write outside
``/work`` fails. Container and volume are always removed. tmpfs pages are charged to
the container's memory cgroup, so ``/work`` also counts against ``memory_mb``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import docker.errors
from docker.client import DockerClient
from docker.models.containers import Container
from docker.types import LogConfig, Mount, Ulimit

from smithers.shared.bundle import LOGS_FILENAME, RESULT_DIRNAME, BundleBounds
from smithers.shared.bundle_archive import extract_result_archive
from smithers.shared.errors import BundleRejected, SandboxError, SandboxOutOfMemory, SandboxTimeout
from smithers.shared.sandbox import SANDBOX_UID, SandboxSpec
from smithers.shared.secret_forms import derived_forms
from smithers.workers.runtime.base import ContainerOutcome, LiveAttempts, OnStarted
from smithers.workers.runtime.egress import Egress, start_egress
from smithers.workers.runtime.request import request_tar

__all__ = ["ATTEMPT_LABEL", "SANDBOX_LABEL", "STORE_LABEL", "WORKER_LABEL", "DockerRuntime"]

log = logging.getLogger(__name__)

SANDBOX_LABEL = "smithers.sandbox"
WORKER_LABEL = "smithers.worker"
ATTEMPT_LABEL = "smithers.attempt"
STORE_LABEL = "smithers.store"
_USER = f"{SANDBOX_UID}:{SANDBOX_UID}"
# The holder (PID 1 and its sleep) runs as another user than the step, so the step can
# neither open /proc/1/fd/1 (the container's log on the host) nor signal its holder.
_HOLDER_USER = "65534:65534"
_NETWORK_MODES = {"none": "none", "full": "bridge"}
_LOG_CONFIG = LogConfig(type=LogConfig.types.JSON, config={"max-size": "1m", "max-file": "1"})
_KILLED_EXIT = 137
_REDACTED = b"[REDACTED]"


@dataclass
class _LogSink:
    """Keeps the first ``limit`` bytes of the step's output and counts the rest."""

    limit: int
    kept: bytearray
    total: int = 0

    def drain(self, chunks: Iterator[bytes]) -> None:
        """Read the exec's output until it ends; a killed container just ends it."""
        with contextlib.suppress(docker.errors.DockerException, OSError, ValueError):
            for chunk in chunks:
                self.total += len(chunk)
                room = self.limit - len(self.kept)
                if room > 0:
                    self.kept += chunk[:room]


@contextlib.contextmanager
def _engine(action: str) -> Iterator[None]:
    """Turn Docker SDK and transport errors into :class:`SandboxError`."""
    try:
        yield
    except docker.errors.ImageNotFound:
        raise SandboxError(f"{action}: image not present on this worker (never pulled)") from None
    except docker.errors.APIError as exc:
        raise SandboxError(f"{action}: {exc.explanation or exc}") from None
    except (docker.errors.DockerException, OSError) as exc:
        raise SandboxError(f"{action}: docker engine error ({type(exc).__name__})") from None


class DockerRuntime:
    """Runs :class:`SandboxSpec` steps in hardened Docker containers.

    ``allowed_volume_roots`` maps a host directory to whether mounts under it may be
    writable; a spec's volume outside every root is refused. Images are never pulled.
    """

    name = "docker"

    def __init__(
        self,
        worker_id: str,
        *,
        client: DockerClient | None = None,
        allowed_volume_roots: Mapping[str, bool] | None = None,
        bounds: BundleBounds | None = None,
        work_size_mb: int = 256,
        max_log_bytes: int = 1024 * 1024,
        api_timeout_s: float = 30.0,
        proxy_image: str = "smithers-sandbox:latest",
    ) -> None:
        """Connect to the engine from the environment (``DOCKER_HOST``) unless given."""
        if not worker_id:
            raise SandboxError("a sandbox runtime needs a worker id")
        self.worker_id = worker_id
        with _engine("connect"):
            self._client = client or DockerClient.from_env(timeout=int(api_timeout_s))
        self._roots = {os.path.realpath(root): bool(rw) for root, rw in (allowed_volume_roots or {}).items()}
        self._bounds = bounds or BundleBounds()
        self._work_size_mb = work_size_mb
        self._max_log_bytes = max_log_bytes
        self._proxy_image = proxy_image

    def close(self) -> None:
        """Close the engine connection (a forked child must open its own)."""
        with contextlib.suppress(docker.errors.DockerException, OSError):
            self._client.close()

    def ping(self) -> None:
        """Raise :class:`SandboxError` unless the Docker engine answers."""
        with _engine("ping"):
            self._client.ping()

    def remove_orphans(self, scope: str, live: LiveAttempts, worker_id: str | None = None) -> int:
        """Remove this deployment's orphaned sandboxes (and their volumes); return how many.

        A sandbox is this deployment's when its ``smithers.store`` label is ``scope``,
        and an orphan when its attempt (the ``smithers.attempt`` label, stable across
        worker restarts, renames and reschedules) is not among ``live(attempt ids)``,
        or when it was started by ``worker_id`` (a restarted worker's predecessor).
        """
        labels = [f"{SANDBOX_LABEL}=1", f"{STORE_LABEL}={scope}"]
        removed = 0
        with _engine("remove orphans"):
            containers = self._client.containers.list(all=True, filters={"label": labels})
            volumes = self._client.volumes.list(filters={"label": labels})
            found = [c.labels for c in containers] + [v.attrs.get("Labels") or {} for v in volumes]
            alive = live({str(lb.get(ATTEMPT_LABEL)) for lb in found if lb.get(ATTEMPT_LABEL)})

            def orphan(lb: Mapping[str, str]) -> bool:
                mine = worker_id is not None and lb.get(WORKER_LABEL) == worker_id
                return mine or lb.get(ATTEMPT_LABEL) not in alive

            for container in containers:
                if orphan(container.labels):
                    with contextlib.suppress(docker.errors.NotFound):
                        container.remove(force=True)
                        removed += 1
            for volume in volumes:
                if orphan(volume.attrs.get("Labels") or {}):
                    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                        volume.remove(force=True)  # APIError: still in use by a live container
            for network in self._client.networks.list(filters={"label": labels}):
                if orphan(network.attrs.get("Labels") or {}):
                    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                        network.remove()
        return removed

    def run(
        self,
        spec: SandboxSpec,
        sandbox_dir: Path,
        labels: Mapping[str, str],
        secret_values: Mapping[str, str],
        on_started: OnStarted | None = None,
    ) -> ContainerOutcome:
        """Run ``spec`` on the request in ``sandbox_dir/request``; fill ``sandbox_dir/result``.

        The result directory receives the step's ``/work/result`` (checked while it is
        extracted) and ``logs.txt``. ``on_started(container id, image digest)`` is
        called once the container runs and holds the request, before the step starts.
        Raises :class:`SandboxTimeout`, :class:`SandboxOutOfMemory`,
        :class:`BundleRejected` or :class:`SandboxError`; a non-zero exit code is not
        an error here. The container is always removed.
        """
        mounts = self._bind_mounts(spec)
        request = request_tar(sandbox_dir / "request", self._work_size_mb * 1024 * 1024)
        result_dir = sandbox_dir / RESULT_DIRNAME
        if os.path.lexists(result_dir):
            shutil.rmtree(result_dir)  # an earlier attempt's; rmtree never follows links
        all_labels = {**labels, SANDBOX_LABEL: "1", WORKER_LABEL: self.worker_id}
        name = f"smithers-sandbox-{uuid.uuid4().hex[:20]}"
        with _engine("create volume"):
            volume = self._client.volumes.create(
                name=name,
                driver="local",
                driver_opts={
                    "type": "tmpfs",
                    "device": "tmpfs",
                    "o": f"size={self._work_size_mb}m,uid={SANDBOX_UID},gid={SANDBOX_UID},"
                    "mode=0700,nosuid,nodev",
                },
                labels=all_labels,
            )
        container: Container | None = None
        egress: Egress | None = None
        try:
            if spec.network == "allowlist":
                with _engine("start egress proxy"):
                    egress = start_egress(self._client, name, spec, all_labels, self._proxy_image)
            with _engine("create container"):
                container = self._create(spec, name, mounts, all_labels, egress)
                container.start()
            with _engine("copy request"):
                container.put_archive("/work", request)
            if on_started is not None:
                on_started(container.id or "", str(container.attrs.get("Image", "")))
            proxy_env = egress.env if egress is not None else {}
            return self._execute(spec, container, result_dir, secret_values, proxy_env)
        finally:
            self._remove(container, volume.name)
            if egress is not None:
                egress.remove()

    def _bind_mounts(self, spec: SandboxSpec) -> list[Mount]:
        """Host volumes, only under an allowed root; writable only if both sides say so."""
        mounts = []
        for volume in spec.volumes:
            host = os.path.realpath(volume.host_path)
            matches = [
                root for root in self._roots if host == root or host.startswith(root.rstrip("/") + "/")
            ]
            if not matches:
                raise SandboxError(f"volume {volume.host_path} is not under an allowed root")
            writable = not volume.read_only and self._roots[max(matches, key=len)]
            mounts.append(
                Mount(
                    target=os.path.normpath(volume.container_path),
                    source=host,
                    type="bind",
                    read_only=not writable,
                )
            )
        return mounts

    def _create(
        self, spec: SandboxSpec, name: str, mounts: list[Mount], labels: dict[str, str], egress: Egress | None
    ) -> Container:
        work = Mount(target="/work", source=name, type="volume", no_copy=True)
        holder_s = math.ceil(spec.timeout_s) + 300  # an orphan ends by itself
        return self._client.containers.create(
            spec.image,
            entrypoint=["sleep"],
            command=[str(holder_s)],
            name=name,
            hostname="sandbox",
            user=_HOLDER_USER,
            working_dir="/work",
            labels=labels,
            init=True,
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            ipc_mode="none",  # no /dev/shm: nothing writable outside /work
            log_config=_LOG_CONFIG,  # nothing should write it; bounded if something does
            network_mode=egress.network.name if egress is not None else _NETWORK_MODES[spec.network],
            ports={f"{port}/tcp": ("127.0.0.1", port) for port in spec.ports},
            mem_limit=f"{spec.memory_mb}m",
            memswap_limit=f"{spec.memory_mb}m",
            nano_cpus=int(spec.cpus * 1e9),
            pids_limit=spec.pids_limit,
            oom_score_adj=500,
            ulimits=[
                Ulimit(name="nofile", soft=4096, hard=4096),
                Ulimit(name="core", soft=0, hard=0),
            ],
            mounts=[work, *mounts],
        )

    def _execute(
        self,
        spec: SandboxSpec,
        container: Container,
        result_dir: Path,
        secret_values: Mapping[str, str],
        proxy_env: Mapping[str, str],
    ) -> ContainerOutcome:
        api = self._client.api
        env = {"HOME": "/work", "TMPDIR": "/work/tmp", **spec.env, **proxy_env, **secret_values}
        try:
            exec_id = api.exec_create(
                container.id, list(spec.command), user=_USER, workdir="/work", environment=env
            )["Id"]
        except (docker.errors.DockerException, OSError):
            # The engine's message could echo the environment, which holds secrets.
            raise SandboxError("start step: the docker engine refused the command") from None
        sink = _LogSink(limit=self._max_log_bytes, kept=bytearray())
        started = time.monotonic()
        with _engine("start step"):
            stream = api.exec_start(exec_id, stream=True)
        reader = threading.Thread(target=sink.drain, args=(stream,), daemon=True)
        reader.start()
        try:
            exit_code, timed_out = self._wait(exec_id, reader, started + spec.timeout_s)
            duration = time.monotonic() - started
            rejected: BundleRejected | None = None
            if not timed_out:
                with contextlib.suppress(docker.errors.APIError):
                    container.pause()  # freeze leftover background processes for the copy
                rejected = self._copy_result(container, result_dir)
            oom = self._stop(container, started, None if timed_out else exit_code)
        finally:
            reader.join(timeout=5)  # the kill ended the output stream
            if reader.is_alive():
                stream.close()
        _write_logs(result_dir, sink, secret_values)
        if timed_out:
            raise SandboxTimeout(f"sandbox step exceeded its timeout of {spec.timeout_s:g}s")
        if oom:
            raise SandboxOutOfMemory(f"sandbox step exceeded its memory limit of {spec.memory_mb} MB")
        if rejected is not None:
            raise rejected
        return ContainerOutcome(
            container_id=container.id or "",
            image_digest=str(container.attrs.get("Image", "")),
            exit_code=exit_code,
            oom_killed=oom,
            duration_s=duration,
            log_bytes=sink.total,
        )

    def _wait(self, exec_id: str, reader: threading.Thread, deadline: float) -> tuple[int, bool]:
        """Wait for the exec to exit; return (exit code, timed out).

        The output stream usually ends when the step exits, but a background child
        holding stdout keeps it open (the daemon waits up to 2 s), so the exec's state
        is polled too, with a growing interval.
        """
        interval = 0.02
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return _KILLED_EXIT, True
            reader.join(timeout=min(interval, remaining))
            with _engine("wait for step"):
                info = self._client.api.exec_inspect(exec_id)
            if not info.get("Running"):
                code = info.get("ExitCode")
                return (code if isinstance(code, int) else -1), False
            interval = min(interval * 1.5, 1.0)

    def _copy_result(self, container: Container, result_dir: Path) -> BundleRejected | None:
        """Copy ``/work/result`` out; a rule violation is returned, not raised yet.

        The archive is fetched with a plain streamed request (not ``get_archive``) so
        that a rejected stream can be closed at once: the engine holds the container's
        lock while it streams, and an abandoned, unread stream blocks even ``kill``.
        """
        api = self._client.api
        url = f"{api.base_url}/v{api.api_version}/containers/{container.id}/archive"
        with _engine("copy result"):
            response = api.get(
                url,
                params={"path": f"/work/{RESULT_DIRNAME}"},
                headers={"Accept-Encoding": "identity"},
                stream=True,
                timeout=api.timeout,
            )
        try:
            if response.status_code == 404:
                os.mkdir(result_dir, 0o700)  # the step removed /work/result: an empty bundle
                return None
            with _engine("copy result"):
                response.raise_for_status()
                extract_result_archive(response.iter_content(64 * 1024), result_dir, self._bounds)
        except BundleRejected as exc:
            return exc
        finally:
            response.close()
        return None

    def _stop(self, container: Container, started: float, exit_code: int | None) -> bool:
        """Kill the container and report whether the kernel OOM-killed anything in it.

        ``exit_code`` is the step's, or None when it was killed at its timeout.
        """
        with _engine("stop"):
            with contextlib.suppress(docker.errors.APIError):
                container.kill()  # it may have stopped already (the step killed its holder)
            container.wait(timeout=10)
            container.reload()
        state = container.attrs.get("State", {})
        if state.get("OOMKilled"):
            return True
        if exit_code != _KILLED_EXIT:
            return False
        # Engines differ on whether an exec'd process's OOM kill sets OOMKilled; the
        # container's "oom" event is authoritative. Costs up to 1 s, SIGKILLed steps only.
        wall_started = time.time() - (time.monotonic() - started)
        with _engine("read events"):
            events = self._client.events(
                since=int(wall_started) - 1,
                until=int(time.time()) + 1,
                filters={"container": container.id or "", "event": "oom"},
                decode=True,
            )
            try:
                return any(True for _ in events)
            finally:
                events.close()

    def _remove(self, container: Container | None, volume_name: str) -> None:
        """Remove the container and its volume; failures are logged, never raised."""
        try:
            if container is not None:
                container.remove(force=True)
            self._client.volumes.get(volume_name).remove(force=True)
        except docker.errors.NotFound:
            pass
        except (docker.errors.DockerException, OSError) as exc:
            log.warning("could not remove sandbox %s: %s", volume_name, type(exc).__name__)


def _write_logs(result_dir: Path, sink: _LogSink, secret_values: Mapping[str, str]) -> None:
    """Write the kept output to ``result/logs.txt`` with every secret value masked,
    and its common encodings."""
    if not os.path.lexists(result_dir):
        os.mkdir(result_dir, 0o700)
    values = [v for v in secret_values.values() if v]
    forms = {f for v in values for f in (v, *derived_forms(v))}
    secrets = sorted({f.encode("utf-8", "surrogatepass") for f in forms}, key=len, reverse=True)
    data = bytes(sink.kept)
    truncated = sink.total > len(data)
    if truncated and secrets:
        data = data[: max(0, len(data) - len(secrets[0]))]  # no half secret at the cut
    for secret in secrets:
        data = data.replace(secret, _REDACTED)
    if truncated:
        data += f"\n[smithers: output truncated; {sink.total} bytes in total]\n".encode()
    fd = os.open(result_dir / LOGS_FILENAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
