"""Secrets are resolved only here, at the worker boundary, and never stored.

A node names the secrets it needs; the worker reads each from its own environment
(``NAME``) or from a file ``<SMITHERS_SECRETS_DIR>/<NAME>`` (a mounted secret), and
registers the value with the redactor so no log line or event can carry it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from smithers.shared.errors import InvalidInput
from smithers.shared.redaction import register_secret

SECRET_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,127}$")


def resolve_secrets(
    names: Iterable[str], secrets_dir: Path | None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Resolve every named secret or raise InvalidInput naming the missing one."""
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for name in names:
        if not SECRET_NAME.match(name):
            raise InvalidInput(f"secret name {name!r} must match {SECRET_NAME.pattern}")
        value = None
        if secrets_dir is not None and (secrets_dir / name).is_file():
            value = (secrets_dir / name).read_text().rstrip("\n")
        elif name in env:
            value = env[name]
        if value is None:
            raise InvalidInput(f"secret {name!r} is not available on this worker")
        register_secret(value)
        values[name] = value
    return values
