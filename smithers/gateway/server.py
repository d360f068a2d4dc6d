"""``smithers gateway``: the app under gunicorn, over TLS when given a certificate.

Worker classes: ``gevent`` (the default: one greenlet per open event stream, so a
worker holds thousands; psycopg 3 cooperates with gevent by itself) or ``gthread``
(one OS thread per open stream, bounded by ``--threads``). docs/benchmarks.md has the
measurements behind the default. Each worker builds its own app after the fork: its own
store connections and its own event poller.
"""

from __future__ import annotations

import argparse
import atexit
import ipaddress
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from smithers.gateway.config import GatewayConfig
from smithers.gateway.httpworkers import WORKER_CLASSES as WORKER_PATHS
from smithers.shared import settings as env_settings
from smithers.shared.errors import InvalidInput
from smithers.shared.logs import json_wanted, setup_logging, style_handler

WORKER_CLASSES = ("gevent", "gthread")
DEFAULT_WORKER_CLASS = env_settings.GATEWAY_WORKER_CLASS.default
log = logging.getLogger("smithers.gateway")


@dataclass(frozen=True)
class ServerOptions:
    """How gunicorn serves the app."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 2
    worker_class: str = DEFAULT_WORKER_CLASS
    threads: int = 64  # gthread only: the most requests (streams included) per worker
    connections: int = 2000  # the most open connections per worker
    certfile: str | None = None
    keyfile: str | None = None
    timeout_s: int = 30
    graceful_timeout_s: int = 5  # open event streams are cut after this; clients resume

    def check(self) -> None:
        """Refuse impossible options before anything starts."""
        if self.worker_class not in WORKER_CLASSES:
            raise InvalidInput(f"--worker-class must be one of {', '.join(WORKER_CLASSES)}")
        if not 0 <= self.port < 65536:
            raise InvalidInput("--port must be between 0 (any free port) and 65535")
        if self.workers < 1 or self.threads < 1:
            raise InvalidInput("--workers and --threads must be at least 1")
        if bool(self.certfile) != bool(self.keyfile):
            raise InvalidInput("--certfile and --keyfile go together")
        for path in (self.certfile, self.keyfile):
            if path and not os.access(path, os.R_OK):
                raise InvalidInput(f"cannot read {path}")

    @property
    def tls(self) -> bool:
        """True when serving HTTPS."""
        return bool(self.certfile and self.keyfile)


def is_loopback(host: str) -> bool:
    """True when every address ``host`` resolves to is a loopback address."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(info[4][0])).is_loopback for info in infos)


def tls_warning(host: str, tls: bool) -> str | None:
    """The warning printed when serving plain HTTP beyond this machine, else None."""
    if tls or is_loopback(host):
        return None
    return (
        f"WARNING: the gateway listens on {host or 'every interface'} without TLS. Bearer tokens, run input"
        " and outputs cross the network in clear text: anyone on the path can read them and replay"
        " the tokens. Pass --certfile and --keyfile, or bind to 127.0.0.1 behind a TLS proxy."
    )


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def settings(options: ServerOptions) -> dict[str, Any]:
    """gunicorn settings for ``options``."""
    values: dict[str, Any] = {
        "bind": [_bind(options.host, options.port)],
        "workers": options.workers,
        "worker_class": WORKER_PATHS[options.worker_class],  # gunicorn's, with JSON errors
        "worker_connections": options.connections,
        "timeout": options.timeout_s,
        "graceful_timeout": options.graceful_timeout_s,
        "keepalive": 5,
        "accesslog": None,  # the app writes its own structured, redacted access log
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "smithers-gateway",
        "logger_class": GunicornLogger,
        "child_exit": _child_exit,
    }
    if options.worker_class == "gthread":
        values["threads"] = options.threads
    if options.tls:
        values["certfile"] = options.certfile
        values["keyfile"] = options.keyfile
    return values


class GunicornLogger(Logger):  # type: ignore[misc]
    """gunicorn's own logger, writing in our format (SMITHERS_LOG_FORMAT) through the redactor."""

    def setup(self, cfg: Any) -> None:
        """Let gunicorn make its handlers, then style each one like ours."""
        super().setup(cfg)
        wanted = json_wanted(os.environ, sys.stderr)
        for logger in (self.error_log, self.access_log):
            for handler in logger.handlers:
                style_handler(handler, "gateway", wanted)


def _child_exit(_server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess  # noqa: PLC0415

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


class GatewayServer(BaseApplication):  # type: ignore[misc]
    """gunicorn's application: builds the Flask app in each worker after the fork."""

    def __init__(self, config: GatewayConfig, options: ServerOptions) -> None:
        self.config = config
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        """Apply :func:`settings` to gunicorn's config."""
        for key, value in settings(self.options).items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        """Build the app in the worker (after gevent patched the standard library)."""
        setup_logging("gateway")
        from smithers.gateway.app import create_app  # noqa: PLC0415

        return create_app(self.config)


def _multiprocess_metrics(workers: int) -> None:
    """Let /metrics sum every worker: must run before prometheus_client is imported."""
    if workers < 2 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    directory = tempfile.mkdtemp(prefix="smithers-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    master = os.getpid()

    def remove() -> None:
        # gunicorn's workers are forks that leave through sys.exit, so they run this too:
        # only the master may remove the directory the other workers still write to
        if os.getpid() == master:
            shutil.rmtree(directory, ignore_errors=True)

    atexit.register(remove)


def serve(config: GatewayConfig, options: ServerOptions) -> int:
    """Run gunicorn until it is stopped; warns when serving plain HTTP off loopback."""
    options.check()
    setup_logging("gateway")
    warning = tls_warning(options.host, options.tls)
    if warning:
        log.warning(warning)
    _multiprocess_metrics(options.workers)
    scheme = "https" if options.tls else "http"
    log.info(
        "smithers gateway: %s://%s (%d %s worker(s))",
        scheme,
        _bind(options.host, options.port),
        options.workers,
        options.worker_class,
    )
    try:
        GatewayServer(config, options).run()
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int | None) else 1
    return 0


def parser() -> argparse.ArgumentParser:
    """The options of ``smithers gateway`` (and ``python -m smithers.gateway``)."""
    p = argparse.ArgumentParser(prog="smithers gateway", description="Serve the gateway under gunicorn.")
    add_options(p)
    return p


def add_options(p: argparse.ArgumentParser) -> None:
    """Add the server options to ``p``."""
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    p.add_argument("--certfile", default=None, help="TLS certificate (PEM); with --keyfile serves HTTPS")
    p.add_argument("--keyfile", default=None, help="TLS private key (PEM)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: min(2, CPUs))")
    p.add_argument(
        "--worker-class", choices=WORKER_CLASSES, default=None, help=f"default {DEFAULT_WORKER_CLASS}"
    )
    p.add_argument("--threads", type=int, default=64, help="gthread: requests (streams too) per worker")


def options_from(args: argparse.Namespace, env: Mapping[str, str]) -> ServerOptions:
    """ServerOptions from parsed arguments (worker class also from SMITHERS_GATEWAY_WORKER_CLASS)."""
    return ServerOptions(
        host=args.host,
        port=args.port,
        workers=args.workers or min(2, os.cpu_count() or 1),
        worker_class=args.worker_class or env_settings.GATEWAY_WORKER_CLASS.read(env),
        threads=args.threads,
        certfile=args.certfile,
        keyfile=args.keyfile,
    )


def main(argv: list[str]) -> int:
    """Entry point of ``python -m smithers.gateway``: the deployment comes from SMITHERS_* variables."""
    from smithers.shared.config import resolve_deployment  # noqa: PLC0415
    from smithers.shared.errors import SmithersError  # noqa: PLC0415

    args, _ = parser().parse_known_args(argv)
    try:
        config = GatewayConfig.from_env(os.environ, resolve_deployment(os.environ))
        return serve(config, options_from(args, os.environ))
    except SmithersError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
