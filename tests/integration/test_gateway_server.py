"""``smithers gateway`` and ``smithers token`` as a user runs them: gunicorn (gevent and
gthread), HTTP and TLS, the plain-text warning, chunked bodies, SSE over a socket,
the structured access log, and ``smithers up`` serving the API end to end."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from smithers.gateway.server import is_loopback, tls_warning
from smithers.shared.status import RunStatus
from smithers.shared.store import Store
from tests.conftest import free_port
from tests.integration.gateway.support import KEY, ROOT, WORKFLOWS

pytestmark = pytest.mark.timeout(180)
JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


def base_env(database_url: str, redis_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMITHERS_")}
    env.update(
        SMITHERS_DATABASE_URL=database_url,
        SMITHERS_WORKFLOWS=WORKFLOWS,
        SMITHERS_JWT_SECRET=KEY,
        PYTHONPATH=str(ROOT),
        **extra,
    )
    if redis_url:
        env["SMITHERS_REDIS_URL"] = redis_url
    return env


def smithers(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smithers", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def start(env: dict[str, str], log: Path, *args: str, tls: bool = False, wait: bool = True) -> Server:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "smithers", "gateway", "--port", str(port), "--workers", "1", *args],
        env=env, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    server = Server(proc, port, log)
    deadline = time.time() + 30
    while wait:
        assert proc.poll() is None, server.output()
        assert time.time() < deadline, server.output()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.1)
    return server


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    made: list[Server] = []
    yield made
    for server in made:
        server.stop()


def request(
    port: int, method: str, path: str, token: str | None = None, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, dict(response.getheaders()), data


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_gateway_and_tokens_from_the_command_line(
    tmp_path: Path, redis_url: str, servers: list[Server], worker_class: str
) -> None:
    # given a gateway started the way a user starts it, and a token from `smithers token issue`
    database_url = f"sqlite:///{tmp_path / 'smithers.db'}"
    env = base_env(database_url, redis_url, SMITHERS_GATEWAY_MAX_BODY="4096")
    server = start(env, tmp_path / "gateway.log", "--worker-class", worker_class)
    servers.append(server)
    issued = smithers(
        env, "token", "issue", "--subject", "ops", "--scopes", "run:read,run:write", "--ttl", "15m"
    )
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert issued.stdout == token + "\n" and JWT.match(token)  # the token alone on stdout

    # then the API answers with it, from the process the user started: no second
    # interpreter was exec'd to patch for gevent (smithers.cli.entry)
    assert request(server.port, "GET", "/healthz")[0] == 200
    cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[1:4] == [b"-m", b"smithers", b"gateway"], cmdline
    assert request(server.port, "GET", "/readyz")[0] == 200
    status, headers, body = request(server.port, "POST", "/v1/runs", token, b'{"workflow": "t-chain"}')
    assert status == 201, body
    run_id = json.loads(body)["run_id"]
    assert headers["X-Request-ID"]

    # a chunked body over the limit is refused without being written
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    chunks = iter([b'{"workflow": "t-chain", "input": {"x": "', b"a" * 5000, b'"}}'])
    conn.request(
        "POST", "/v1/runs", body=chunks, encode_chunked=True,
        headers={"Authorization": f"Bearer {token}", "Transfer-Encoding": "chunked"},
    )  # fmt: skip
    response = conn.getresponse()
    assert response.status == 413, response.read()
    conn.close()

    # and a run's events stream over the socket until the run ends
    store = Store(database_url)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", f"/v1/runs/{run_id}/events", headers={"Authorization": f"Bearer {token}"})
    stream = conn.getresponse()
    assert stream.status == 200 and stream.getheader("Content-Type", "").startswith("text/event-stream")
    assert stream.readline() == b"retry: 2000\n"
    with store.write() as tx:
        tx.emit(run_id, "node.progress", payload={"step": 1})
    with store.write() as tx:
        tx.conn.exec_driver_sql(f"UPDATE runs SET status = 'succeeded' WHERE run_id = '{run_id}'")
        tx.emit(run_id, f"run.{RunStatus.SUCCEEDED.value}")
    text = stream.read().decode()  # ends by itself: the run is terminal
    conn.close()
    store.close()
    # run.launched, the launch's first decision (attempt.queued, run.running), then ours
    assert re.findall(r"^id: (\d+)$", text, re.M) == ["1", "2", "3", "4", "5"]
    assert '"type":"attempt.queued"' in text
    assert 'event: end\ndata: {"reason": "terminal", "last_id": 5}' in text

    # revoking with the CLI (not through the gateway) refuses the token within
    # SMITHERS_GRANT_CACHE (1 s: a worker may have read the row just before); the list shows it
    listing = smithers(env, "token", "list").stdout
    jti = listing.split()[0]
    assert "ops" in listing and "active" in listing
    assert smithers(env, "token", "revoke", jti).returncode == 0
    time.sleep(1.1)
    assert request(server.port, "GET", "/v1/runs", token)[0] == 401
    assert smithers(env, "token", "list").stdout.strip() == ""
    assert "revoked" in smithers(env, "token", "list", "--all").stdout

    # the access log is one JSON line per request, without the token
    server.stop()
    lines = [json.loads(line) for line in server.output().splitlines() if '"smithers.gateway.access"' in line]
    # (a line is written once its response has gone out, so with gthread two requests'
    # lines may swap places: compare the first four as a multiset)
    first = sorted((x["method"], x["path"], x["status"]) for x in lines[:4])
    assert first == [
        ("GET", "/healthz", 200),
        ("GET", "/readyz", 200),
        ("POST", "/v1/runs", 201),
        ("POST", "/v1/runs", 413),
    ]
    assert {"time", "request_id", "subject", "duration_ms"} <= set(lines[0])
    assert token not in server.output() and token.split(".")[2] not in server.output()
    assert "MonkeyPatchWarning" not in server.output()


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_tls_and_the_plain_text_warning(tmp_path: Path, servers: list[Server]) -> None:
    if not any(os.access(Path(d) / "openssl", os.X_OK) for d in os.environ.get("PATH", "").split(":")):
        pytest.skip("openssl not available")
    env = base_env(f"sqlite:///{tmp_path / 'smithers.db'}", None)
    cert, key = _certificate(tmp_path)

    # on every interface with TLS: no warning, HTTPS answers, plain HTTP does not
    secure = start(
        env, tmp_path / "tls.log", "--host", "0.0.0.0", "--certfile", str(cert), "--keyfile", str(key)
    )
    servers.append(secure)
    context = ssl.create_default_context(cafile=str(cert))
    conn = http.client.HTTPSConnection("127.0.0.1", secure.port, context=context, timeout=10)
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200
    conn.close()
    with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
        request(secure.port, "GET", "/healthz")
    assert "WARNING" not in secure.output() and "https://" in secure.output()

    # on every interface without TLS: a warning that names the risk
    plain = start(env, tmp_path / "plain.log", "--host", "0.0.0.0")
    servers.append(plain)
    assert request(plain.port, "GET", "/healthz")[0] == 200
    warning = plain.output()
    assert "WARNING" in warning and "without TLS" in warning and "replay the tokens" in warning

    # on loopback without TLS: no warning
    local = start(env, tmp_path / "local.log")
    servers.append(local)
    assert "WARNING" not in local.output()


def test_a_bad_option_or_missing_key_is_a_clear_error(tmp_path: Path) -> None:
    env = base_env(f"sqlite:///{tmp_path / 'smithers.db'}", None)
    del env["SMITHERS_JWT_SECRET"]
    env["SMITHERS_REDIS_URL"] = "redis://127.0.0.1:1/0"  # a cluster: no key in a data directory
    result = smithers(env, "gateway", "--port", str(free_port()))
    assert result.returncode != 0 and "no token signing key" in result.stderr
    env["SMITHERS_JWT_SECRET"] = KEY
    result = smithers(env, "gateway", "--certfile", str(tmp_path / "missing.pem"))
    assert result.returncode != 0 and "--keyfile" in result.stderr
    env["SMITHERS_JWT_SECRET"] = "short"
    assert "shorter than 32" in smithers(env, "gateway").stderr


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("10.1.2.3")
    assert tls_warning("127.0.0.1", tls=False) is None
    assert tls_warning("0.0.0.0", tls=True) is None
    assert "without TLS" in (tls_warning("0.0.0.0", tls=False) or "")


def test_smithers_up_serves_the_api_end_to_end(tmp_path: Path) -> None:
    # given `smithers up` on a fresh data directory, with the gateway on a chosen port
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMITHERS_")}
    env.update(SMITHERS_WORKFLOWS="smithers.examples.hello", PYTHONPATH=str(ROOT))
    port = free_port()
    log = tmp_path / "up.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "smithers", "up", "--data-dir", str(data), "--port", str(port)],
        cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None and time.time() < deadline, log.read_text()
            try:
                if request(port, "GET", "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        # when a token is issued from the same data directory (its key lives there, mode 0600)
        issued = subprocess.run(
            [sys.executable, "-m", "smithers", "token", "issue", "--subject", "me",
             "--scopes", "run:read,run:write", "--data-dir", str(data)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert issued.returncode == 0, issued.stderr
        assert (data / "gateway.key").stat().st_mode & 0o077 == 0
        token = issued.stdout.strip()

        # then a run launched over REST is followed over SSE to its end
        status, _, body = request(
            port, "POST", "/v1/runs", token, b'{"workflow": "hello", "input": {"name": "up"}}'
        )
        assert status == 201, body
        run_id = json.loads(body)["run_id"]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("GET", f"/v1/runs/{run_id}/events", headers={"Authorization": f"Bearer {token}"})
        text = conn.getresponse().read().decode()
        conn.close()
        assert '"type":"run.succeeded"' in text and '"reason": "terminal"' in text
        detail = json.loads(request(port, "GET", f"/v1/runs/{run_id}", token)[2])
        assert detail["run"]["status"] == "succeeded"
        assert {o["node_id"] for o in detail["outputs"]} == {"greet", "shout", "count", "reverse", "summary"}
        assert len(detail["attempts"]) >= 5
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _workers(master: int) -> set[int]:
    return {
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and _ppid(entry) == master
    }


def _ppid(entry: Path) -> int:
    try:
        return int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_metrics_survive_a_gunicorn_worker_that_exits(
    tmp_path: Path, redis_url: str, servers: list[Server], how: signal.Signals
) -> None:
    # given a gateway with two gunicorn workers sharing a multiprocess metrics directory
    env = base_env(f"sqlite:///{tmp_path / 'smithers.db'}", redis_url, TMPDIR=str(tmp_path))
    server = start(env, tmp_path / "gateway.log", "--workers", "2")
    servers.append(server)
    deadline = time.time() + 30
    while len(_workers(server.proc.pid)) < 2:
        assert time.time() < deadline, server.output()
        time.sleep(0.1)
    # (a request is counted once its response is closed, after the client has it: until a
    # later scrape shows a count, killing a worker could lose the only one)
    while b"smithers_gateway_requests_total" not in request(server.port, "GET", "/metrics")[2]:
        assert time.time() < deadline, server.output()
        time.sleep(0.1)
    (directory,) = tmp_path.glob("smithers-metrics-*")

    # when one worker exits (cleanly or killed) and gunicorn replaces it
    before = _workers(server.proc.pid)
    gone = min(before)
    os.kill(gone, how)
    while not (gone not in _workers(server.proc.pid) and len(_workers(server.proc.pid)) == 2):
        assert time.time() < deadline + 30, server.output()
        time.sleep(0.1)

    # then the directory is still there and every request to either worker answers
    assert directory.is_dir()
    for _ in range(8):  # new connections: gunicorn spreads them over both workers
        status, _, body = request(server.port, "GET", "/metrics")
        assert status == 200, body
        assert b"smithers_gateway_requests_total" in body
        assert request(server.port, "GET", "/readyz")[0] == 200

    # and a broken metrics path is reported, not hidden behind a 200
    directory.rename(directory.with_name(directory.name + "-moved"))
    try:
        status, _, body = request(server.port, "GET", "/readyz")
        assert status == 503 and json.loads(body)["checks"]["metrics"] == "unavailable", body
        status, _, body = request(server.port, "GET", "/metrics")
        assert status == 503 and json.loads(body)["error"]["code"] == "metrics_unavailable", body
        assert request(server.port, "GET", "/healthz")[0] == 200
    finally:
        directory.with_name(directory.name + "-moved").rename(directory)


def raw_request(port: int, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are; the status, headers and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_requests_gunicorn_refuses_get_the_json_shape_a_request_id_and_an_access_line(
    tmp_path: Path, database_url: str, servers: list[Server], worker_class: str
) -> None:
    # given the gateway under gunicorn
    env = base_env(database_url, None, SMITHERS_LOG_FORMAT="json")
    server = start(env, tmp_path / "gateway.log", "--worker-class", worker_class)
    servers.append(server)
    big_header = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    long_line = b"GET /v1/runs?x=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    garbage = b"NOT HTTP AT ALL\r\n\r\n"

    # when requests are refused before the app sees them
    answers = {
        431: raw_request(server.port, big_header),
        414: raw_request(server.port, long_line),
        400: raw_request(server.port, garbage),
    }

    # then each answer is JSON with a request id, and each has an access-log line
    ids = {}
    for status, (got, headers, body) in answers.items():
        assert got == status, body
        assert headers["Content-Type"] == "application/json"
        assert set(json.loads(body)["error"]) == {"code", "message"}
        ids[status] = headers["X-Request-ID"]
    # and a lower-case auth scheme is accepted like any other
    issued = smithers(env, "token", "issue", "--subject", "ops", "--scopes", "run:read", "--ttl", "15m")
    token = issued.stdout.strip()
    lower = f"GET /v1/runs HTTP/1.1\r\nHost: x\r\nAuthorization: bearer {token}\r\nConnection: close\r\n\r\n"
    got, _, body = raw_request(server.port, lower.encode())
    assert got == 200, body
    server.stop()
    access = [json.loads(x) for x in server.output().splitlines() if '"smithers.gateway.access"' in x]
    logged = {line["status"]: line["request_id"] for line in access}
    assert {s: logged.get(s) for s in ids} == ids
