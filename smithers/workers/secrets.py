"""Secrets are resolved only here, at the worker boundary, and never stored.

A node names the secrets it needs; the worker reads each from its own environment
(``NAME``) or from a file ``<SMITHERS_SECRETS_DIR>/<NAME>`` (a mounted secret), and
registers the value with the redactor so no log line or event can carry it.

Only names meant for injection resolve from the environment: ``SMITHERS_SECRET_*`` and
the names listed in ``SMITHERS_SECRETS_ALLOW``. The worker's own configuration
(``SMITHERS_DATABASE_URL`` and every other ``SMITHERS_*``) never does, not even from a
file, so an untrusted sandbox step cannot ask for the store's password by name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from smithers.shared.errors import InvalidInput
from smithers.shared.redaction import register_secret

SECRET_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,127}$")
SECRET_PREFIX = "SMITHERS_SECRET_"  # noqa: S105 (a name prefix, not a password)
_CONFIG_PREFIX = "SMITHERS_"


def injectable(name: str, allow: Collection[str]) -> bool:
    """True when the environment variable ``name`` may be handed to a step as a secret."""
    if name.startswith(SECRET_PREFIX):
        return True
    return name in allow and not name.startswith(_CONFIG_PREFIX)


def resolve_secrets(
    names: Iterable[str],
    secrets_dir: Path | None,
    environ: Mapping[str, str] | None = None,
    allow: Collection[str] = frozenset(),
) -> dict[str, str]:
    """Resolve every named secret or raise InvalidInput naming the missing one.

    A file ``<secrets_dir>/<NAME>`` wins; the environment is read only for names
    :func:`injectable` admits. ``SMITHERS_*`` configuration is refused either way.
    """
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for name in names:
        if not SECRET_NAME.match(name):
            raise InvalidInput(f"secret name {name!r} must match {SECRET_NAME.pattern}")
        if name.startswith(_CONFIG_PREFIX) and not name.startswith(SECRET_PREFIX):
            raise InvalidInput(f"secret {name!r} is worker configuration, never a step's secret")
        value = None
        if secrets_dir is not None and (secrets_dir / name).is_file():
            value = (secrets_dir / name).read_text().rstrip("\n")
        elif name in env and not injectable(name, allow):
            raise InvalidInput(
                f"secret {name!r} is not allowed for injection (name it {SECRET_PREFIX}*,"
                " list it in SMITHERS_SECRETS_ALLOW or mount it in SMITHERS_SECRETS_DIR)"
            )
        elif name in env:
            value = env[name]
        if value is None:
            raise InvalidInput(f"secret {name!r} is not available on this worker")
        register_secret(value)
        values[name] = value
    return values
