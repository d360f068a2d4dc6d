"""Backups: an online SQLite backup (WAL included), pg_dump / pg_restore for PostgreSQL.

SQLite: :func:`backup` uses SQLite's online backup API, which copies a consistent
snapshot of the database, including pages still in the WAL, while other processes keep
writing. PostgreSQL: ``pg_dump --format=custom`` (a consistent snapshot as well) and
``pg_restore --clean --if-exists``. Restore into a deployment whose processes are
stopped.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy.engine import make_url

from smithers.shared.errors import InvalidInput, StoreUnavailable


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise InvalidInput("backups need a SQLite file, not an in-memory database")
    return Path(database)


def _libpq_url(url: str) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


def _tool(tools: Path | None, name: str) -> str:
    return str(tools / name) if tools is not None else name


def _run(argv: list[str]) -> None:
    tool = argv[0]
    if shutil.which(tool) is None:
        raise StoreUnavailable(f"{tool} is not installed (Debian: postgresql-client)")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise StoreUnavailable(f"{tool} failed: {message[-1] if message else done.returncode}")


def backup(url: str, target: Path, tools: Path | None = None) -> int:
    """Write a consistent backup of the store at ``url`` to ``target``; returns its size.
    ``tools``: the directory of the PostgreSQL client programs to use (else PATH's)."""
    if target.exists():
        raise InvalidInput(f"{target} exists; choose a new backup path")
    target.parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("sqlite"):
        source = _sqlite_path(url)
        if not source.exists():
            raise InvalidInput(f"no database at {source}")
        tmp = target.with_name(target.name + ".part")
        src = sqlite3.connect(str(source), timeout=30)
        dst = sqlite3.connect(str(tmp))
        try:
            with dst:
                src.backup(dst, pages=1024)
        finally:
            dst.close()
            src.close()
        tmp.replace(target)
    else:
        _run([_tool(tools, "pg_dump"), "--format=custom", "--no-owner", f"--file={target}", _libpq_url(url)])
    return target.stat().st_size


def restore(url: str, source: Path, tools: Path | None = None) -> None:
    """Replace the store at ``url`` with the backup at ``source`` (processes stopped)."""
    if not source.is_file():
        raise InvalidInput(f"no backup at {source}")
    if url.startswith("sqlite"):
        target = _sqlite_path(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        src = sqlite3.connect(str(source))
        dst = sqlite3.connect(str(target), timeout=30)
        try:
            if src.execute("PRAGMA integrity_check").fetchone() != ("ok",):
                raise InvalidInput(f"{source} is not a sound SQLite database")
            with dst:
                src.backup(dst)
        except sqlite3.DatabaseError as exc:
            raise InvalidInput(f"{source} is not a SQLite backup: {exc}") from exc
        finally:
            dst.close()
            src.close()
    else:
        _run(
            [
                _tool(tools, "pg_restore"),
                "--clean",
                "--if-exists",
                "--no-owner",
                f"--dbname={_libpq_url(url)}",
                str(source),
            ]
        )
