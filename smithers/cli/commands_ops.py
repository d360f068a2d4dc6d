"""``smithers flower`` and ``smithers metrics``: the operator's views of a cluster.

``flower`` runs Celery Flower against the deployment's broker, always behind HTTP basic
auth (``SMITHERS_FLOWER_USER`` and ``SMITHERS_FLOWER_PASSWORD`` or
``SMITHERS_FLOWER_PASSWORD_FILE``); it refuses to start without them. ``metrics``
prints, or serves, the store-derived Prometheus metrics of :mod:`smithers.shared.metrics`.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from smithers.cli import exitcodes
from smithers.cli.context import broker_of, deployment_of, stop_on_signals, store_of
from smithers.shared import settings
from smithers.shared.errors import BrokerUnavailable, InvalidInput
from smithers.shared.redaction import sensitive_key

# add(name, fn) -> the sub-command's parser (its help in smithers.cli.main.COMMANDS)
Add = Callable[[str, Callable[[argparse.Namespace], int]], argparse.ArgumentParser]

MIN_PASSWORD_CHARS = 12
_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]*@")  # user:password@ in a URL


def flower_credentials(env: Mapping[str, str]) -> tuple[str, str]:
    """The basic-auth user and password Flower must require; InvalidInput when absent."""
    user = settings.FLOWER_USER.read(env)
    password = settings.FLOWER_PASSWORD.read(env)
    if not password and settings.FLOWER_PASSWORD_FILE.read(env):
        path = Path(settings.FLOWER_PASSWORD_FILE.read(env))
        try:
            password = path.read_text().strip()
        except OSError as exc:
            raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    if not user or not password:
        raise InvalidInput(
            "Flower needs basic auth: set SMITHERS_FLOWER_USER and SMITHERS_FLOWER_PASSWORD"
            " (or SMITHERS_FLOWER_PASSWORD_FILE); it never serves the queues unauthenticated"
        )
    if ":" in user or "," in user + password:
        raise InvalidInput("the Flower user may not contain ':' and neither may contain ','")
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInput(f"the Flower password must have at least {MIN_PASSWORD_CHARS} characters")
    return user, password


def flower_argv(args: argparse.Namespace) -> list[str]:
    """Celery's command line for Flower (the credentials travel in the environment)."""
    # --logging=none: tornado installs no handler of its own; ours (JSON, redacted) applies.
    argv = ["flower", f"--address={args.host}", f"--port={args.port}", "--logging=none"]
    if args.url_prefix:
        argv.append(f"--url_prefix={args.url_prefix}")
    if bool(args.certfile) != bool(args.keyfile):
        raise InvalidInput("--certfile and --keyfile go together")
    if args.certfile:
        argv += [f"--certfile={args.certfile}", f"--keyfile={args.keyfile}"]
    if args.purge_offline_workers is not None:
        argv.append(f"--purge_offline_workers={args.purge_offline_workers}")
    return argv


def cmd_flower(args: argparse.Namespace) -> int:
    """Run Flower in this process, on our broker and queues, behind basic auth."""
    from celery import Celery  # noqa: PLC0415 (keeps other commands light)
    from kombu import Queue  # noqa: PLC0415

    from smithers.shared.broker import celery_settings  # noqa: PLC0415
    from smithers.shared.keys import QUEUES  # noqa: PLC0415
    from smithers.shared.logs import setup_logging  # noqa: PLC0415

    user, password = flower_credentials(os.environ)
    dep = deployment_of(args)
    setup_logging("flower", args.log_level)
    if dep.redis_url is None:
        broker_of(dep, required=True)  # raises with the usual explanation
        raise BrokerUnavailable("no broker")
    argv = flower_argv(args)
    # Flower reads FLOWER_* variables itself; this keeps the password off every command line.
    os.environ["FLOWER_BASIC_AUTH"] = f"{user}:{password}"
    os.environ.pop("FLOWER_UNAUTHENTICATED_API", None)
    os.environ.pop("FLOWER_AUTH", None)
    app = Celery("smithers-flower", set_as_current=False)
    app.conf.update(celery_settings(dep.broker_url or dep.redis_url))
    # Our queues show on the Broker page even while no worker consumes them.
    app.conf.task_queues = [Queue(name, routing_key=name) for name in QUEUES]
    print(f"smithers flower: http{'s' if args.certfile else ''}://{args.host}:{args.port}", file=sys.stderr)
    code: int | None = app.start(argv)
    return int(code or exitcodes.OK)


def cmd_metrics(args: argparse.Namespace) -> int:
    """Print the store-derived metrics once, or serve them on --port until stopped."""
    from prometheus_client import CollectorRegistry, generate_latest, start_http_server  # noqa: PLC0415

    from smithers.shared.metrics import StoreCollector  # noqa: PLC0415

    dep = deployment_of(args)
    store = store_of(dep)
    broker = broker_of(dep, required=False)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store, broker))
    if args.port is None:
        sys.stdout.write(generate_latest(registry).decode())
        return exitcodes.OK
    stop = stop_on_signals()
    server, thread = start_http_server(args.port, addr=args.host, registry=registry)
    print(f"smithers metrics: http://{args.host}:{args.port}/metrics", file=sys.stderr, flush=True)
    try:
        stop.wait()
    finally:
        server.shutdown()
        thread.join(timeout=5)
    return exitcodes.OK


def cmd_config(args: argparse.Namespace) -> int:
    """Every SMITHERS_* variable: the value set here or its default (``--markdown``: the
    reference, docs/configuration.md)."""
    if args.markdown:
        sys.stdout.write(settings.render_markdown())
        return exitcodes.OK
    for section in settings.SECTIONS:
        print(f"# {section.title}")
        for setting in section.settings:
            raw = os.environ.get(setting.name, "").strip()
            if not raw:
                print(f"{setting.name:<40} (default: {setting.default_text().replace('`', '')})")
            else:
                secret = sensitive_key(setting.name.removeprefix("SMITHERS_"))
                shown = "[set]" if secret else _URL_PASSWORD.sub(r"\1[redacted]@", raw)
                print(f"{setting.name:<40} {shown}")
    return exitcodes.OK


def register(add: Add) -> None:
    """Add the ``config``, ``flower`` and ``metrics`` sub-commands."""
    p = add("config", cmd_config)
    p.add_argument("--markdown", action="store_true", help="print the reference (docs/configuration.md)")

    p = add("flower", cmd_flower)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5555)
    p.add_argument("--url-prefix", default=None, help="serve under this path (behind a proxy)")
    p.add_argument("--certfile", default=None, help="TLS certificate (PEM); with --keyfile serves HTTPS")
    p.add_argument("--keyfile", default=None)
    p.add_argument("--purge-offline-workers", type=int, default=None, metavar="SECONDS")
    p.add_argument("--log-level", default="INFO")

    p = add("metrics", cmd_metrics)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="serve /metrics here instead of printing once")
