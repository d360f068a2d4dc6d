"""The egress proxy of an ``allowlist`` sandbox: admits only the listed host:port pairs.

Standard library only and free of any smithers import: the runtime hands this file's
source to ``python3 -c`` in the proxy container (any image with Python 3.8+), with the
allowlist as a JSON list argument. It serves ``CONNECT host:port`` (HTTPS and any
TCP protocol a client tunnels) and plain ``GET http://host:port/...`` requests, as
``HTTP(S)_PROXY`` clients send them; everything else is refused with 403 or 400.

Matching is on the name the step asked for, exactly (no wildcards): the proxy
resolves it itself, so the step cannot pick the address.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import threading
from urllib.parse import urlsplit

PORT = 3128
MAX_HEAD = 16 * 1024
MAX_CONNECTIONS = 64
IDLE_S = 300.0


def parse_allowlist(raw: str) -> frozenset[tuple[str, int]]:
    """``'["api.example.com:443"]'`` -> ``{("api.example.com", 443)}``."""
    pairs = set()
    for item in json.loads(raw):
        host, _, port = str(item).rpartition(":")
        pairs.add((host.strip("[]").lower(), int(port)))
    return frozenset(pairs)


def _host_port(target: str, default: int) -> tuple[str, int]:
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = target.partition(":")
    return host.lower(), int(port) if port else default


def _read_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk or len(data) + len(chunk) > MAX_HEAD:
            raise ValueError("request head too long or cut short")
        data += chunk
    return data


def _pipe(a: socket.socket, b: socket.socket) -> None:
    peers = {a: b, b: a}
    while True:
        ready, _, _ = select.select(list(peers), [], [], IDLE_S)
        if not ready:
            return
        for sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            peers[sock].sendall(data)


def _refuse(conn: socket.socket, status: str, why: str) -> None:
    print(f"egress-proxy: refused: {why}", file=sys.stderr, flush=True)
    body = f"{why}\n".encode()
    head = f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    conn.sendall(head.encode() + body)


def handle(conn: socket.socket, allow: frozenset[tuple[str, int]]) -> None:
    """Serve one client connection: check its destination, then relay bytes."""
    conn.settimeout(30)
    head = _read_head(conn)
    line, _, rest = head.partition(b"\r\n")
    parts = line.decode("latin-1").split(" ")
    if len(parts) != 3:
        return _refuse(conn, "400 Bad Request", "malformed request line")
    method, target, version = parts
    if method == "CONNECT":
        host, port = _host_port(target, 443)
        forward = head[head.index(b"\r\n\r\n") + 4 :]  # what the client sent after the head
    else:
        url = urlsplit(target)
        if url.scheme != "http" or not url.hostname:
            return _refuse(conn, "400 Bad Request", "only CONNECT and absolute http:// requests")
        host, port = url.hostname.lower(), url.port or 80
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        forward = f"{method} {path} {version}\r\n".encode("latin-1") + rest
    if (host, port) not in allow:
        return _refuse(conn, "403 Forbidden", f"{host}:{port} is not on the sandbox's egress allowlist")
    try:
        upstream = socket.create_connection((host, port), timeout=10)
    except OSError as exc:
        return _refuse(conn, "502 Bad Gateway", f"{host}:{port}: {type(exc).__name__}")
    with upstream:
        if method == "CONNECT":
            conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if forward:
            upstream.sendall(forward)
        conn.settimeout(None)
        upstream.settimeout(None)
        _pipe(conn, upstream)


def serve(allow: frozenset[tuple[str, int]], port: int = PORT) -> None:
    """Accept connections forever, at most ``MAX_CONNECTIONS`` at a time."""
    slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
    server = socket.create_server(("0.0.0.0", port), backlog=MAX_CONNECTIONS)  # noqa: S104 (its own network)

    def run(conn: socket.socket) -> None:
        try:
            with conn:
                handle(conn, allow)
        except (OSError, ValueError):
            pass
        finally:
            slots.release()

    print(f"egress-proxy: listening on {port}", file=sys.stderr, flush=True)
    while True:
        conn, _ = server.accept()
        if not slots.acquire(blocking=False):
            conn.close()
            continue
        threading.Thread(target=run, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    serve(parse_allowlist(sys.argv[1]))
