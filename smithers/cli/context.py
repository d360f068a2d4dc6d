"""What the commands share: the deployment, its store, broker and registry, who runs the
command (``cli:$USER``, or whom ``--as`` names, asserted), and stopping on signals."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from sqlalchemy.engine import make_url

from smithers.shared import settings
from smithers.shared.broker import Broker
from smithers.shared.config import Deployment, decision_config, resolve_deployment
from smithers.shared.datadir import find_data_dir, read_record, where_looked
from smithers.shared.errors import (
    BrokerUnavailable,
    StoreUnavailable,
)
from smithers.shared.registry import Registry, load_registry
from smithers.shared.store import Store
from smithers.shared.store.advance import Decider


def deployment_of(args: argparse.Namespace) -> Deployment:
    return resolve_deployment(os.environ, getattr(args, "data_dir", None))


def _looked(dep: Deployment) -> str:
    """Where the data directory came from, for the errors of a deployment not found."""
    if dep.data_dir is not None and dep.data_dir != find_data_dir(os.environ):
        return f"--data-dir {dep.data_dir}"
    return where_looked(os.environ)


def registry_of(dep: Deployment, required: bool = True) -> Registry:
    """The deployment's workflows (``SMITHERS_WORKFLOWS``, else those ``smithers up``
    recorded). ``required``: no deployment at all is an error (exit 5), not an empty list."""
    if required and not dep.workflows and dep.data_dir is not None and read_record(dep.data_dir) is None:
        raise StoreUnavailable(
            f"no smithers deployment found ({_looked(dep)}) and SMITHERS_WORKFLOWS is not set;"
            " start `smithers up` in your project directory, or give its --data-dir"
        )
    return load_registry(dep.workflows, str(dep.project_dir) if dep.project_dir else None)


def store_of(dep: Deployment, create: bool = False) -> Store:
    """The deployment's store, migrated. Only with ``create`` (``up``, ``migrate`` and the
    processes) may a new SQLite file be made: other commands need an existing one."""
    database = make_url(dep.database_url).database
    if not create and dep.database_url.startswith("sqlite") and database and database != ":memory:":
        path = Path(database)
        if not path.is_file():
            raise StoreUnavailable(
                f"no smithers store at {path} ({_looked(dep)}); start `smithers up` in your project"
                " directory first, or point --data-dir or SMITHERS_DATA_DIR at its data directory"
            )
    store = Store(dep.database_url)
    store.migrate()
    return store


def broker_of(dep: Deployment, required: bool) -> Broker | None:
    if dep.redis_url is None:
        if required:
            where = dep.data_dir or "."
            raise BrokerUnavailable(
                f"no `smithers up` is running with data directory {where}; start it first"
                " (or set SMITHERS_DATABASE_URL and SMITHERS_REDIS_URL for a cluster)"
            )
        return None
    return Broker(dep.redis_url, dep.broker_url)


def decider(registry: Registry) -> Decider:
    """This command's decider: a launch makes the run's first decision itself."""
    return Decider(registry, decision_config(os.environ), settings.DECIDE_MAX_NODES.read(os.environ))


def operator() -> str:
    """The local user running this command, as an actor: ``cli:$USER``."""
    return f"cli:{os.environ.get('USER', 'unknown')}"


def actor_of(args: argparse.Namespace) -> str:
    return getattr(args, "actor", None) or operator()


def asserted_by(args: argparse.Namespace) -> str | None:
    """The local operator who asserted another actor with ``--as`` (no token proves it),
    or None. Decisions record it in their event and audit entry (``asserted``)."""
    return operator() if getattr(args, "actor", None) else None


def record_assertion(args: argparse.Namespace) -> None:
    """One audit entry ``actor.asserted`` for a local command run ``--as`` someone: who
    ran it, whom it named, through what (the store, not a token)."""
    from smithers.shared.grants import TtlPolicy  # noqa: PLC0415
    from smithers.shared.store.approvals import assertion  # noqa: PLC0415
    from smithers.shared.store.grants import ControlPlaneStore  # noqa: PLC0415

    store = store_of(deployment_of(args))
    run_id = getattr(args, "run_id", None)
    try:
        ControlPlaneStore(store, TtlPolicy.from_env(os.environ)).record_event(
            "actor.asserted",
            actor=operator(),
            target_type="command",
            target_id=str(args.command),
            run_id=run_id if isinstance(run_id, str) else None,
            detail={
                "command": str(args.command),
                "asserted_actor": str(args.actor),
                **assertion(operator()),
            },
        )
    finally:
        store.close()


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT, SIGTERM or SIGHUP (a closed terminal; unless ignored, as
    under nohup): the process then stops in order instead of dying mid-work."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if sig is not signal.SIGHUP or signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, lambda *_: stop.set())
    return stop


def follow_opts(p: argparse.ArgumentParser) -> None:
    """The options of a command that follows a run: --wait, --timeout."""
    p.add_argument("--wait", action="store_true", help="keep following through approvals (no exit 3)")
    p.add_argument("--timeout", type=float, default=None, help="stop following after N seconds (exit 8)")
