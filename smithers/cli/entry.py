"""The ``smithers`` console script's first step, before anything heavy is imported.

``smithers gateway`` (gevent workers, the default) and ``smithers worker --pool gevent``
run in this process, so gevent must patch the standard library before anything imports
``socket``, ``ssl`` or ``threading``. This module decides it from the command line and
the environment alone (as Celery's own ``celery`` command does for ``--pool``), patches,
and only then imports the command line, :mod:`smithers.cli.main`, which in turn imports
only the module of the command it runs. Once, the gateway and such a worker exec'd a
fresh interpreter to patch first, which imported everything a second time.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from smithers.shared.settings import GATEWAY_WORKER_CLASS

__all__ = ["main", "option", "wants_gevent"]


def option(argv: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` in ``argv`` (``--flag V`` or ``--flag=V``; the last one
    wins, as with argparse), or None."""
    value = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(f"{flag}="):
            value = arg[len(flag) + 1 :]
    return value


def wants_gevent(argv: Sequence[str], env: Mapping[str, str]) -> bool:
    """True when the command ``argv`` names runs under gevent: ``gateway`` with gevent
    workers (``--worker-class``, else ``SMITHERS_GATEWAY_WORKER_CLASS``, default gevent)
    or ``worker --pool gevent``. A spelling this misses (an abbreviated option) is still
    served right: the command then starts a patched interpreter of its own."""
    command = argv[0] if argv else None
    if command == "gateway":
        return (option(argv, "--worker-class") or GATEWAY_WORKER_CLASS.read(env)) == "gevent"
    if command == "worker":
        return option(argv, "--pool") == "gevent"
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``smithers`` console script and ``python -m smithers``. Only a
    process's own command line (``argv`` None) patches: a caller passing ``argv`` keeps
    its standard library as it is."""
    if argv is None and wants_gevent(sys.argv[1:], os.environ):
        from gevent import monkey  # type: ignore[import-untyped]  # noqa: PLC0415

        monkey.patch_all()
    from smithers.cli.main import main as run  # noqa: PLC0415

    return run(argv)
