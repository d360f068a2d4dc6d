"""The ``smithers`` command line."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from smithers.cli import exitcodes
from smithers.cli.childproc import watch_parent
from smithers.cli.context import record_assertion
from smithers.cli.profiles import target
from smithers.shared.errors import (
    BrokerUnavailable,
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    SmithersError,
    StoreUnavailable,
    Unauthorized,
)

Handler = Callable[[argparse.Namespace], int]
# The sub-commands other modules add, by module and in the order ``smithers --help``
# lists them, with their help. Each module defines ``register(add)``, where
# ``add(name, fn) -> argparse.ArgumentParser`` creates one of its sub-commands (its help
# from here), and is imported only when one of its commands runs: ``smithers --help``
# lists them all from this table alone (tests/unit/test_cli_commands.py checks that each
# module adds exactly these).
COMMANDS: dict[str, dict[str, str]] = {
    "smithers.cli.commands_runs": {
        "run": "launch a run and follow it node by node",
        "watch": "follow a run until it settles",
        "status": "show a run, its nodes and attempts",
        "runs": "list runs, newest first; `runs migrate` moves runs to another revision",
        "approve": "approve (or --deny) a pending approval",
        "signal": "send a signal to a run (a signal node waiting for NAME takes it)",
        "cancel": "cancel a run",
        "resume": "resume a failed or cancelled run under the same id",
        "rerun": "a new run of the same workflow with the same input (its parent this run)",
        "delete": "delete a run and its dependent rows (the audit entry stays)",
        "workflows": "list registered workflows",
        "migrate": "create or upgrade the store schema",
    },
    "smithers.cli.commands_processes": {
        "up": "run scheduler, worker and gateway on one node (SQLite + embedded broker)",
        "scheduler": "run the scheduler process",
        "worker": "run a Celery worker",
    },
    "smithers.cli.commands_history": {
        "rewind": "reopen a node and everything downstream of it; the run resumes from there",
        "replay": "a new run from this run's state up to a node (same input)",
        "fork": "a new run from this run's state up to a node, with new input",
        "audit": "a run's whole audit trail in time order",
        "db": "back up or restore the store (SQLite online backup, pg_dump/pg_restore), or prune old runs",
    },
    "smithers.cli.commands_gateway": {
        "gateway": "serve the REST API and event streams (gunicorn)",
        "token": "issue, revoke and list bearer grants",
    },
    "smithers.cli.commands_sandbox": {
        "sandboxes": "list a run's sandboxes, their patches and reviews",
        "review": "accept or reject the patches of a sandbox step",
    },
    "smithers.cli.commands_ops": {
        "config": "the SMITHERS_* settings: each one's value here, or its default",
        "flower": "Celery Flower on the deployment's queues and workers (basic auth)",
        "metrics": "Prometheus metrics from the store and the queues (print, or --port)",
    },
    "smithers.cli.commands_revisions": {
        "revisions": "list a workflow's stored revisions and the live processes holding each",
    },
    "smithers.cli.approvals": {
        "approvals": "list approvals (pending by default), oldest request first",
        "deny": "deny a pending approval (as `approve --deny`)",
    },
    "smithers.cli.commands_login": {
        "login": "keep a gateway URL and token as a named profile (remote command line)",
        "logout": "forget a saved gateway profile",
    },
    "smithers.cli.commands_schedules": {
        "schedules": "list cron schedules, or pause / resume one (WORKFLOW:SCHEDULE_ID)",
    },
}


# -- parser ----------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        help="embedded deployment directory (default: SMITHERS_DATA_DIR, else the nearest .smithers/"
        " with a deployment.json in the current directory or a parent, else ./.smithers)",
    )


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser of every sub-command. Given the command line ``argv``, only
    the module of the command it names is imported; every other command of
    :data:`COMMANDS` is there by name and help alone (enough for ``smithers --help``)."""
    parser = argparse.ArgumentParser(prog="smithers", description="Durable workflow engine.")
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {name: text for commands in COMMANDS.values() for name, text in commands.items()}

    def add(name: str, fn: Handler, help: str | None = None) -> argparse.ArgumentParser:
        text = help if help is not None else helps[name]
        p = sub.add_parser(name, help=text, description=text)
        _common(p)
        p.set_defaults(fn=fn)
        return p

    named = next((arg for arg in argv if not arg.startswith("-")), None) if argv is not None else None
    for module, commands in COMMANDS.items():
        if argv is None or named in commands:
            importlib.import_module(module).register(add)
        else:
            for name, text in commands.items():
                sub.add_parser(name, help=text, description=text, add_help=False)
    return parser


_EXIT = [
    (NotFound, exitcodes.NOT_FOUND),
    (InvalidInput, exitcodes.BAD_INPUT),
    (Conflict, exitcodes.CONFLICT),
    (Forbidden, exitcodes.DENIED),
    (Unauthorized, exitcodes.UNAUTHENTICATED),
    (RateLimited, exitcodes.UNAVAILABLE),
    (StoreUnavailable, exitcodes.UNAVAILABLE),
    (BrokerUnavailable, exitcodes.UNAVAILABLE),
]


def _dispatch(args: argparse.Namespace) -> int:
    """Through the gateway when SMITHERS_GATEWAY_URL or SMITHERS_PROFILE is set (see
    :mod:`smithers.cli.remote`), else on the store."""
    command = str(args.command)
    if command not in ("config", "login", "logout"):
        where = target(os.environ)
        if where is not None:
            from smithers.cli import remote  # noqa: PLC0415 (the HTTP client: remote mode only)

            return remote.dispatch(args, where)
    if getattr(args, "actor", None) and (command != "db" or args.action == "prune"):
        record_assertion(args)  # (a restore makes the store: nothing to write it in before)
    return int(args.fn(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``smithers`` console script.

    Ctrl-C ends a command with exit 130 and no traceback. A reader that goes away
    (``smithers status RUN --json | head -1``) ends it with exit 141, as a shell reports
    a command killed by SIGPIPE, and no traceback either (the recipe of the Python docs,
    "Note on SIGPIPE": stdout is pointed at /dev/null so the exit flush cannot fail).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    watch_parent(os.environ)  # a child of `smithers up` ends with it
    try:
        code = _dispatch(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit flush
        return code
    except SmithersError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        for cls, code in _EXIT:
            if isinstance(exc, cls):
                return code
        return exitcodes.BAD_INPUT if exc.http_status < 500 else exitcodes.UNAVAILABLE
    except KeyboardInterrupt:
        return exitcodes.INTERRUPTED
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return exitcodes.BROKEN_PIPE
