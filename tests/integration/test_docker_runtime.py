"""The Docker sandbox runtime on a real engine: limits, isolation and bundle safety.

Needs a Docker engine and the ``smithers-sandbox:latest`` image (``.ci/docker-setup.sh``).
Without them the tests skip, unless ``CI=true``, where they fail.
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import docker.errors
import pytest
from docker.client import DockerClient

from smithers.shared.bundle import BundleBounds, ResultStatus, collect_result_bundle, write_request_bundle
from smithers.shared.errors import (
    BundleRejected,
    InvalidWorkflow,
    SandboxError,
    SandboxOutOfMemory,
    SandboxTimeout,
)
from smithers.shared.sandbox import SandboxSpec, VolumeMount
from smithers.workers.runtime import ContainerOutcome, DockerRuntime

pytestmark = pytest.mark.timeout(90)

IMAGE = "smithers-sandbox:latest"


@pytest.fixture(scope="module")
def engine() -> DockerClient:
    """A client for a live engine that has the sandbox image, or a skip (a failure in CI)."""
    problem = None
    try:
        client = DockerClient.from_env(timeout=30)
        client.ping()
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        problem = f"image {IMAGE} missing: run .ci/docker-setup.sh"
    except docker.errors.DockerException as exc:
        problem = f"no Docker engine ({type(exc).__name__}): run .ci/docker-setup.sh"
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    return client


@pytest.fixture
def worker_id(engine: DockerClient) -> Iterator[str]:
    """A unique worker id; after the test, no container or volume of it may remain."""
    worker = f"test-{uuid.uuid4().hex[:12]}"
    yield worker
    labels: dict[str, str | list[str] | bool] = {"label": [f"smithers.worker={worker}"]}
    leftovers = engine.containers.list(all=True, filters=labels)
    for container in leftovers:
        container.remove(force=True)
    volumes = engine.volumes.list(filters=labels)
    for volume in volumes:
        volume.remove(force=True)
    assert not leftovers, f"containers left behind: {[c.name for c in leftovers]}"
    assert not volumes, f"volumes left behind: {[v.name for v in volumes]}"


@pytest.fixture
def runtime(engine: DockerClient, worker_id: str) -> DockerRuntime:
    return DockerRuntime(worker_id, client=engine, bounds=BundleBounds(max_bundle_bytes=1 << 20))


def run_step(
    runtime: DockerRuntime,
    tmp_path: Path,
    script: str,
    secrets: Mapping[str, str] | None = None,
    **fields: object,
) -> tuple[Path, ContainerOutcome]:
    """Write a request, run ``sh -c script`` in the sandbox; return (sandbox dir, outcome)."""
    sandbox_dir = write_request_bundle(
        tmp_path / "sandboxes", "run-1", "step-1", {"n": 2}, {"up": "x"}, {"src/a.txt": "A\n"}
    )
    arguments: dict[str, object] = {"timeout_s": 20, **fields}
    if secrets:
        arguments["secrets"] = tuple(secrets)
    spec = SandboxSpec(command=("sh", "-c", script), **arguments)  # type: ignore[arg-type]
    outcome = runtime.run(spec, sandbox_dir, {"smithers.run": "run-1"}, secrets or {})
    return sandbox_dir, outcome


def logs_of(sandbox_dir: Path) -> str:
    return (sandbox_dir / "result" / "logs.txt").read_text(errors="replace")


MANIFEST = (
    'printf \'%s\' \'{"status": "succeeded", "outputs": {"lines": 2}, '
    '"patches": ["fix.diff"], "artifacts": ["out/report.txt"]}'
    "' > /work/result/manifest.json"
)


def test_good_step_produces_a_collected_bundle(runtime: DockerRuntime, tmp_path: Path) -> None:
    # given a step that reads its request and writes a patch and an artifact
    script = f"""
        set -e
        cat /work/request/input.json
        cat /work/request/files/src/a.txt
        echo "token=$API_TOKEN"
        printf -- '--- a\\n+++ b\\n' > /work/result/patches/fix.diff
        mkdir /work/result/artifacts/out
        echo report > /work/result/artifacts/out/report.txt
        {MANIFEST}
    """
    # when it runs
    sandbox_dir, outcome = run_step(runtime, tmp_path, script, secrets={"API_TOKEN": "s3cr3t-v4lue"})
    manifest = collect_result_bundle(sandbox_dir / "result", BundleBounds())

    # then the outcome, the bundle and the logs are what the step produced
    assert outcome.exit_code == 0
    assert not outcome.oom_killed
    assert outcome.image_digest.startswith("sha256:")
    assert manifest.status is ResultStatus.SUCCEEDED
    assert manifest.outputs == {"lines": 2}
    assert [(p.path, p.size) for p in manifest.patches] == [("fix.diff", 12)]
    assert [(a.path, a.size) for a in manifest.artifacts] == [("out/report.txt", 7)]
    logs = logs_of(sandbox_dir)
    assert '{"input": {"n": 2}, "upstream": {"up": "x"}}' in logs
    assert "A\n" in logs
    assert "token=[REDACTED]" in logs
    assert "s3cr3t" not in logs


def test_memory_limit_raises_out_of_memory(runtime: DockerRuntime, tmp_path: Path) -> None:
    # a shell string that doubles until it hits the 32 MB limit
    with pytest.raises(SandboxOutOfMemory, match="32 MB"):
        run_step(runtime, tmp_path, "x=a; while :; do x=$x$x; done", memory_mb=32, timeout_s=15)


def test_no_network_without_allow_network(
    runtime: DockerRuntime, engine: DockerClient, tmp_path: Path
) -> None:
    # given a TCP listener on the docker bridge gateway (the host, seen from a container)
    ipam = engine.networks.get("bridge").attrs["IPAM"]["Config"][0]
    gateway = ipam.get("Gateway") or str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))
    listener = socket.create_server((gateway, 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]
    accepted: list[bool] = []

    def accept() -> None:
        try:
            connection, _ = listener.accept()
            connection.close()
            accepted.append(True)
        except OSError:
            pass

    probe = f"""
        ls /sys/class/net
        if bash -c 'exec 3<>/dev/tcp/{gateway}/{port}' 2>/dev/null; then echo CONNECTED
        else echo UNREACHABLE; fi
    """
    try:
        # when a step without allow_network probes the network
        closed_dir, _ = run_step(runtime, tmp_path / "closed", probe, timeout_s=10)
        # and, as a control, a step with allow_network does the same
        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        open_dir, _ = run_step(runtime, tmp_path / "open", probe, allow_network=True, timeout_s=10)
        thread.join(timeout=10)
    finally:
        listener.close()

    # then only the loopback interface exists and the host cannot be reached
    closed = logs_of(closed_dir).split()
    assert closed == ["lo", "UNREACHABLE"]
    assert "CONNECTED" in logs_of(open_dir)
    assert "eth0" in logs_of(open_dir)
    assert accepted == [True]


def test_fork_bomb_stops_at_the_pids_limit(runtime: DockerRuntime, tmp_path: Path) -> None:
    # given a fork bomb under a 32-process limit and a 3 s timeout
    sandbox_dir = tmp_path / "sandboxes" / "run-1" / "step-1"
    outcome: ContainerOutcome | None = None
    started = time.monotonic()
    # when it runs, it either fails or is killed at its timeout
    with contextlib.suppress(SandboxTimeout):
        _, outcome = run_step(runtime, tmp_path, "bomb() { bomb | bomb; }; bomb", pids_limit=32, timeout_s=3)
    elapsed = time.monotonic() - started

    # then it did not succeed, did not hang, and forks were refused inside the sandbox
    assert outcome is None or outcome.exit_code != 0
    assert elapsed < 20
    assert "fork" in logs_of(sandbox_dir).lower()
    # and the host still forks normally
    assert subprocess.run(["true"], check=False, timeout=5).returncode == 0


def test_writes_outside_work_fail(runtime: DockerRuntime, tmp_path: Path) -> None:
    script = """
        for p in /x /etc/x /tmp/x /var/tmp/x /usr/local/x /dev/shm/x /run/x /dev/x /proc/x; do
            if (echo hi > "$p") 2>/dev/null; then echo "WROTE $p"; fi
        done
        echo ok > /work/tmp/scratch && echo "WORK-WRITABLE"
        id -u
    """
    sandbox_dir, outcome = run_step(runtime, tmp_path, script)
    logs = logs_of(sandbox_dir)
    assert "WROTE" not in logs
    assert "WORK-WRITABLE" in logs
    assert logs.split()[-1] == "10001"
    assert outcome.exit_code == 0


def test_timeout_kills_and_removes_the_container(
    runtime: DockerRuntime, engine: DockerClient, worker_id: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    with pytest.raises(SandboxTimeout, match="timeout of 1s"):
        run_step(runtime, tmp_path, "echo started; sleep 60", timeout_s=1)
    assert time.monotonic() - started < 10
    assert engine.containers.list(all=True, filters={"label": f"smithers.worker={worker_id}"}) == []
    assert "started" in logs_of(tmp_path / "sandboxes" / "run-1" / "step-1")


def test_symlink_to_host_file_is_rejected(runtime: DockerRuntime, tmp_path: Path) -> None:
    script = f"ln -s /etc/passwd /work/result/artifacts/passwd; {MANIFEST}"
    with pytest.raises(BundleRejected) as caught:
        run_step(runtime, tmp_path, script)
    assert "artifacts/passwd: symbolic link points outside the bundle" in str(caught.value)


def test_hard_link_is_rejected(runtime: DockerRuntime, tmp_path: Path) -> None:
    # a link to a host file cannot even be made (another filesystem); one inside can
    script = """
        ln /etc/passwd /work/result/artifacts/passwd || echo "LINK-OUT-FAILED"
        echo data > /work/result/artifacts/a
        ln /work/result/artifacts/a /work/result/artifacts/b
        echo '{"status": "succeeded", "artifacts": ["b"]}' > /work/result/manifest.json
    """
    sandbox_dir, _ = run_step(runtime, tmp_path, script)
    assert "LINK-OUT-FAILED" in logs_of(sandbox_dir)
    with pytest.raises(BundleRejected, match=r"artifacts/b: is a hard link"):
        collect_result_bundle(sandbox_dir / "result", BundleBounds())


def test_oversize_file_is_rejected_while_copying(runtime: DockerRuntime, tmp_path: Path) -> None:
    # the runtime's bound is 1 MiB; the step writes 2 MiB
    script = f"head -c 2097152 /dev/zero > /work/result/artifacts/big.bin; {MANIFEST}"
    with pytest.raises(BundleRejected, match=r"artifacts/big\.bin: result bundle exceeds"):
        run_step(runtime, tmp_path, script)
    assert not (tmp_path / "sandboxes" / "run-1" / "step-1" / "result" / "artifacts" / "big.bin").exists()


def test_remove_orphans_matches_the_attempt_not_the_workers_name(
    runtime: DockerRuntime, engine: DockerClient, worker_id: str
) -> None:
    # given sandboxes of one deployment: one this worker left, one of a lost attempt
    # started by a worker since renamed, one of a live attempt, and one of another deployment
    scope = uuid.uuid4().hex[:16]

    def sandbox(worker: str, attempt: str, store: str = scope, start: bool = True) -> str:
        labels = {
            "smithers.sandbox": "1",
            "smithers.worker": worker,
            "smithers.attempt": attempt,
            "smithers.store": store,
        }
        container = engine.containers.create(IMAGE, ["sleep", "60"], labels=labels)
        if start:
            container.start()
        return container.id or ""

    mine = sandbox(worker_id, "a-live-mine")
    renamed = sandbox(f"{worker_id}-before-reschedule", "a-lost", start=False)  # sat exited
    volume = engine.volumes.create(
        labels={"smithers.sandbox": "1", "smithers.attempt": "a-lost", "smithers.store": scope}
    )
    live = sandbox(f"{worker_id}-sibling", "a-live")
    foreign = sandbox(f"{worker_id}-sibling", "a-lost", store="another-deployment")
    asked: list[set[str]] = []

    def alive(ids: object) -> set[str]:
        asked.append(set(ids))  # type: ignore[call-overload]
        return {"a-live", "a-live-mine"} & asked[-1]

    try:
        # when this worker starts and cleans up
        removed = runtime.remove_orphans(scope, alive, worker_id)

        # then its own and the lost attempt's sandboxes are gone, volume too; the rest stay
        assert removed == 2
        for gone in (mine, renamed):
            with pytest.raises(docker.errors.NotFound):
                engine.containers.get(gone)
        with pytest.raises(docker.errors.NotFound):
            engine.volumes.get(volume.name or "")
        assert engine.containers.get(live).status == "running"
        assert engine.containers.get(foreign).status == "running"
        assert asked == [{"a-live-mine", "a-lost", "a-live"}]
    finally:
        for container_id in (mine, renamed, live, foreign):
            with contextlib.suppress(docker.errors.NotFound):
                engine.containers.get(container_id).remove(force=True)
        with contextlib.suppress(docker.errors.NotFound):
            engine.volumes.get(volume.name or "").remove(force=True)


def test_volumes_only_from_the_allowlist_and_read_only_unless_allowed(
    engine: DockerClient, worker_id: str, tmp_path: Path
) -> None:
    # given a worker that allows read-only mounts under one directory
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "data.txt").write_text("shared data\n")
    runtime = DockerRuntime(worker_id, client=engine, allowed_volume_roots={str(allowed): False})
    script = "cat /data/data.txt; (echo x > /data/new.txt) 2>/dev/null && echo WROTE-VOLUME; true"

    # when a step asks for a writable mount of it
    sandbox_dir, _ = run_step(
        runtime, tmp_path, script, volumes=(VolumeMount(str(allowed), "/data", read_only=False),)
    )

    # then it can read but not write, and a directory outside the allowlist is refused
    assert "shared data" in logs_of(sandbox_dir)
    assert "WROTE-VOLUME" not in logs_of(sandbox_dir)
    assert not (allowed / "new.txt").exists()
    with pytest.raises(SandboxError, match="not under an allowed root"):
        run_step(runtime, tmp_path / "2", "true", volumes=(VolumeMount("/etc", "/data"),))


def test_background_process_does_not_hold_the_step_open(runtime: DockerRuntime, tmp_path: Path) -> None:
    # a step that exits while a child it started keeps stdout open
    started = time.monotonic()
    sandbox_dir, outcome = run_step(runtime, tmp_path, "sleep 30 & echo done; exit 3")
    assert outcome.exit_code == 3
    assert time.monotonic() - started < 5
    assert "done" in logs_of(sandbox_dir)


def test_step_cannot_write_the_container_log_on_the_host(
    runtime: DockerRuntime, engine: DockerClient, tmp_path: Path
) -> None:
    # given a step that tries to fill the host's disk through its holder's stdout and stderr
    script = """
        for fd in /proc/1/fd/1 /proc/1/fd/2; do
            if head -c 1048576 /dev/zero > "$fd" 2>/dev/null
            then echo "WROTE $fd"; else echo "REFUSED $fd"; fi
        done
        kill -9 1 2>/dev/null && echo "KILLED holder" || echo "holder kept"
    """
    sandbox_dir = write_request_bundle(tmp_path / "sandboxes", "run-1", "step-1", {}, {}, {})
    log_configs: list[dict[str, object]] = []

    def started(container_id: str, digest: str) -> None:
        log_configs.append(engine.api.inspect_container(container_id)["HostConfig"]["LogConfig"])

    # when it runs
    spec = SandboxSpec(command=("sh", "-c", script), timeout_s=20)
    outcome = runtime.run(spec, sandbox_dir, {}, {}, on_started=started)

    # then both writes are refused, the holder survives, and the log would be capped anyway
    logs = logs_of(sandbox_dir)
    assert outcome.exit_code == 0
    assert "REFUSED /proc/1/fd/1" in logs and "REFUSED /proc/1/fd/2" in logs, logs
    assert "WROTE" not in logs
    assert "holder kept" in logs
    assert log_configs == [{"Type": "json-file", "Config": {"max-size": "1m", "max-file": "1"}}]


PROXY_IMAGES = ("python:3.11-slim", "smithers:local", "smithers:latest")


@pytest.fixture
def proxy_image(engine: DockerClient) -> str:
    """An image with python3 for the egress proxy (built by .ci/build-images.sh)."""
    for image in (os.environ.get("SMITHERS_SANDBOX_PROXY_IMAGE", ""), *PROXY_IMAGES):
        with contextlib.suppress(docker.errors.ImageNotFound, docker.errors.APIError):
            if image:
                engine.images.get(image)
                return image
    problem = (
        f"no image with python3 for the egress proxy ({', '.join(PROXY_IMAGES)}): run .ci/build-images.sh"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(problem)
    pytest.skip(problem)


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from {self.server.server_address[1]}\n".encode()  # type: ignore[index]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


def test_allowlist_egress_reaches_only_the_listed_destinations(
    engine: DockerClient, worker_id: str, proxy_image: str, tmp_path: Path
) -> None:
    # given two HTTP servers of the test's own on the bridge gateway (the host)
    ipam = engine.networks.get("bridge").attrs["IPAM"]["Config"][0]
    gateway = ipam.get("Gateway") or str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))
    servers = [http.server.ThreadingHTTPServer((gateway, 0), _Hello) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    allowed, denied = (f"{gateway}:{server.server_address[1]}" for server in servers)
    # and a step allowed to reach only the first, which tries both, by both proxy methods,
    # and then tries to go around the proxy
    script = f"""
        proxy=${{HTTP_PROXY#http://}}
        ask() {{
            exec 3<>"/dev/tcp/${{proxy%:*}}/${{proxy##*:}}"
            printf "$1" >&3
            tr -d '\\r' <&3 | grep -E '^(HTTP|hello)' | sed "s|^|$2: |"
            exec 3<&-
        }}
        ask 'GET http://{allowed}/ HTTP/1.0\\r\\n\\r\\n' get-allowed
        ask 'GET http://{denied}/ HTTP/1.0\\r\\n\\r\\n' get-denied
        ask 'CONNECT {allowed} HTTP/1.1\\r\\n\\r\\nGET / HTTP/1.0\\r\\n\\r\\n' connect-allowed
        ask 'CONNECT {denied} HTTP/1.1\\r\\n\\r\\n' connect-denied
        if timeout 5 bash -c 'exec 3<>/dev/tcp/{gateway}/{allowed.rsplit(":", 1)[1]}' 2>/dev/null
        then echo direct: CONNECTED; else echo direct: UNREACHABLE; fi
    """
    runtime = DockerRuntime(worker_id, client=engine, proxy_image=proxy_image)
    spec = SandboxSpec(command=("bash", "-c", script), network="allowlist", egress=(allowed,), timeout_s=40)
    sandbox_dir = write_request_bundle(tmp_path / "sandboxes", "run-1", "step-1", {}, {}, {})
    try:
        # when it runs
        outcome = runtime.run(spec, sandbox_dir, {}, {})
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()

    # then only the listed destination answered, and nothing went around the proxy
    logs = logs_of(sandbox_dir)
    port = allowed.rsplit(":", 1)[1]
    assert outcome.exit_code == 0, logs
    assert "get-allowed: HTTP/1.0 200" in logs and f"get-allowed: hello from {port}" in logs, logs
    assert "connect-allowed: HTTP/1.1 200 Connection established" in logs, logs
    assert f"connect-allowed: hello from {port}" in logs, logs
    assert "get-denied: HTTP/1.1 403 Forbidden" in logs and "connect-denied: HTTP/1.1 403 Forbidden" in logs
    assert "hello from " + denied.rsplit(":", 1)[1] not in logs
    assert "direct: UNREACHABLE" in logs, logs
    # and the proxy and its network are gone with the sandbox
    assert not engine.networks.list(filters={"label": [f"smithers.worker={worker_id}"]})


def test_network_policy_is_validated() -> None:
    assert SandboxSpec(command=("true",), allow_network=True).network == "full"
    spec = SandboxSpec(command=("true",), network="allowlist", egress=("API.Example.com:443", "[::1]:8080"))
    assert spec.egress == ("api.example.com:443", "[::1]:8080") and not spec.allow_network
    for bad in (
        {"network": "some"},
        {"network": "allowlist"},
        {"egress": ("a.example:443",)},
        {"network": "allowlist", "egress": ("a.example",)},
        {"network": "allowlist", "egress": ("a b:80",)},
        {"network": "allowlist", "egress": ("a.example:443",), "ports": (80,)},
    ):
        with pytest.raises(InvalidWorkflow):
            SandboxSpec(command=("true",), **bad)  # type: ignore[arg-type]


def test_encoded_secrets_are_masked_in_the_logs(runtime: DockerRuntime, tmp_path: Path) -> None:
    # given a step that prints its secret base64-encoded (at two offsets), as hex and URL-encoded
    secret = "s3cr3t/v4lue+x=y&more"
    script = """
        printf %s "$API_TOKEN" | base64 -w0; echo
        printf %s "xy$API_TOKEN" | base64 -w0; echo
        printf %s "$API_TOKEN" | od -An -tx1 | tr -d ' \\n'; echo
        printf %s "$API_TOKEN" | perl -pe 's/([^A-Za-z0-9_.~-])/sprintf("%%%02X", ord($1))/ge'; echo
    """
    # when it runs
    sandbox_dir, outcome = run_step(runtime, tmp_path, script, secrets={"API_TOKEN": secret})
    # then none of the encodings is in the kept log
    logs = logs_of(sandbox_dir)
    assert outcome.exit_code == 0
    assert logs.count("[REDACTED]") == 4, logs
    assert "czNjcjN0L3Y0bHVl" not in logs and "7333637233742f" not in logs and "%2Fv4lue" not in logs
