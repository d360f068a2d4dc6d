"""The data directory of a single-node deployment: how commands find it, and its record.

``smithers up`` keeps the embedded default in one directory, ``.smithers/`` in the
directory it starts in unless told otherwise: the SQLite store, ``broker.json`` (its
embedded Redis, while it runs), logs, sandboxes, and ``deployment.json``, the record of
what the deployment runs: its workflow modules, the project directory they import from,
and the store and broker URLs when they are not the embedded ones (passwords are never
written there: give them with ``PGPASSWORD`` or ``~/.pgpass``, or set the URL again).

Commands find the directory as git finds ``.git``: ``--data-dir``, else
``SMITHERS_DATA_DIR``, else the nearest ``.smithers/`` holding a ``deployment.json`` in
the current directory or one of its parents, else ``./.smithers`` (where ``smithers up``
creates it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from smithers.shared import settings

DIR_NAME = ".smithers"
RECORD_FILE = "deployment.json"


def find_data_dir(env: Mapping[str, str], flag: str | None = None, cwd: Path | None = None) -> Path:
    """The data directory: ``flag``, ``SMITHERS_DATA_DIR``, the nearest ``.smithers/`` with
    a record in ``cwd`` or a parent, else ``cwd/.smithers`` (which may not exist)."""
    explicit = flag or settings.DATA_DIR.read(env)
    if explicit:
        return Path(explicit).resolve()
    start = (cwd or Path.cwd()).resolve()
    for directory in (start, *start.parents):
        if (directory / DIR_NAME / RECORD_FILE).is_file():
            return directory / DIR_NAME
    return start / DIR_NAME


def where_looked(env: Mapping[str, str], flag: str | None = None, cwd: Path | None = None) -> str:
    """How :func:`find_data_dir` chose, for error messages."""
    if flag:
        return f"--data-dir {Path(flag).resolve()}"
    given = settings.DATA_DIR.read(env)
    if given:
        return f"{settings.DATA_DIR.name}={Path(given).resolve()}"
    start = (cwd or Path.cwd()).resolve()
    return f"looked for {DIR_NAME}/{RECORD_FILE} in {start} and its parents"


@dataclass(frozen=True)
class Record:
    """What ``smithers up`` records in ``deployment.json`` for the other commands."""

    workflows: str  # comma-separated module names
    project_dir: Path  # where the workflow modules import from (the cwd of `smithers up`)
    deployment_version: str
    database_url: str | None = None  # None: the embedded SQLite file
    redis_url: str | None = None  # None: the embedded broker (broker.json)
    broker_url: str | None = None  # the step messages' broker when not redis_url


def read_record(data_dir: Path) -> Record | None:
    """The record in ``data_dir``, or None when there is none (or it is unreadable)."""
    try:
        info = json.loads((data_dir / RECORD_FILE).read_text())
        return Record(
            workflows=str(info.get("workflows") or ""),
            project_dir=Path(str(info["project_dir"])),
            deployment_version=str(info.get("deployment_version") or "dev"),
            database_url=info.get("database_url") or None,
            redis_url=info.get("redis_url") or None,
            broker_url=info.get("broker_url") or None,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_record(data_dir: Path, record: Record) -> Path:
    """Write ``deployment.json`` atomically (a rename), readable by its owner only."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / RECORD_FILE
    body = {
        "workflows": record.workflows,
        "project_dir": str(record.project_dir),
        "deployment_version": record.deployment_version,
        "database_url": _without_password(record.database_url),
        "redis_url": _without_password(record.redis_url),
        "broker_url": _without_password(record.broker_url),
    }
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(body, out, indent=2)
        out.write("\n")
    tmp.replace(path)
    return path


def _without_password(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}@{host}" if user else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))
