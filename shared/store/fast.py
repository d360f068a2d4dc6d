"""Prebuilt Core statements run straight on the DBAPI cursor, compiled once per dialect.

SQLAlchemy's execute path costs about 60 µs a statement on top of the driver's 5 to
10 µs (measured: ``docs/benchmarks.md``), and one step of a workflow runs about forty
statements. The hot path (claim, commit, decide, append events) therefore compiles its
module-level statements once per dialect with SQLAlchemy's own compiler, keeping the
SQL text, the bind order, the bind processors (JSON encoding, booleans) and the result
processors, and then calls the cursor itself. Dialect differences stay SQLAlchemy's:
the same statement object yields ``?`` placeholders on SQLite and ``%(name)s`` on
psycopg2, ``FOR UPDATE`` only where it exists, JSON decoding only where the driver
does not decode it already.

A statement this cannot run faithfully (Python-side column defaults, expanding ``IN``
lists, renamed binds) falls back to ``Connection.execute``, so :func:`execute` is safe
on any statement. It must run inside a transaction SQLAlchemy has begun (a
``Store.write()`` block) or on a read connection, like any other execute.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection
from sqlalchemy.sql import Executable


class Result(Protocol):
    """What callers use of a result: the shared part of ours and SQLAlchemy's."""

    @property
    def rowcount(self) -> int: ...

    def first(self) -> Any: ...

    def all(self) -> Sequence[Any]: ...

    def scalar_one(self) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...


class _Row(tuple):  # type: ignore[type-arg]
    """Base of the row types made per statement: a named tuple with ``_mapping``."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    @property
    def _mapping(self) -> dict[str, Any]:
        return dict(zip(self._fields, self, strict=True))


@dataclass
class _Compiled:
    stmt: Executable  # held so the id() in the cache key is never reused
    sql: str
    order: tuple[str, ...] | None  # bind names in placeholder order (positional dialects)
    defaults: dict[str, Any]
    binds: tuple[tuple[str, Callable[[Any], Any]], ...]
    row: type[_Row] | None
    types: tuple[Any, ...]  # result column types; processors are found on first use
    results: tuple[tuple[int, Callable[[Any], Any]], ...] | None = None


_CACHE: dict[tuple[str, int, tuple[str, ...] | None], _Compiled | None] = {}


def _compile(conn: Connection, stmt: Executable, keys: tuple[str, ...] | None) -> _Compiled | None:
    dialect = conn.dialect
    element: Any = stmt
    compiled: Any = element.compile(dialect=dialect, column_keys=list(keys) if keys is not None else None)
    binds = compiled.binds
    if (
        compiled.insert_prefetch
        or compiled.update_prefetch
        or compiled.escaped_bind_names
        or any(b.expanding or b.literal_execute for b in binds.values())
    ):
        return None
    processors = []
    for name, bind in binds.items():
        proc = bind.type._cached_bind_processor(dialect)
        if proc is not None:
            processors.append((name, proc))
    row: type[_Row] | None = None
    columns = getattr(compiled, "_result_columns", None) or []
    if columns:
        names = [c.keyname for c in columns]
        row = type("Row", (namedtuple("_Fields", names, rename=True), _Row), {"__slots__": ()})
        row._fields = tuple(names)
    order = tuple(compiled.positiontup) if compiled.positional else None
    defaults = {k: v for k, v in compiled.construct_params(_check=False).items() if v is not None}
    types = tuple(c.type for c in columns)
    return _Compiled(stmt, compiled.string, order, defaults, tuple(processors), row, types)


def compiled_for(conn: Connection, stmt: Executable, keys: tuple[str, ...] | None = None) -> _Compiled | None:
    """The cached compilation of ``stmt`` for this connection's dialect (None: fall back)."""
    key = (conn.dialect.name, id(stmt), keys)
    try:
        return _CACHE[key]
    except KeyError:
        pass
    c = _compile(conn, stmt, keys)
    _CACHE[key] = c
    return c


class _Result:
    """A DBAPI cursor's result, read eagerly into typed rows."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def all(self) -> list[Any]:
        return self._rows

    def scalar_one(self) -> Any:
        if len(self._rows) != 1:
            raise LookupError(f"expected one row, got {len(self._rows)}")
        return self._rows[0][0]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


def _args(c: _Compiled, params: Mapping[str, Any]) -> Any:
    values = {**c.defaults, **params} if c.defaults else dict(params)
    for name, proc in c.binds:
        if name in values:
            values[name] = proc(values[name])
    if c.order is None:
        return values
    return tuple(values[n] for n in c.order)


def _read(c: _Compiled, cursor: Any, dialect: Any) -> list[Any]:
    if c.row is None or cursor.description is None:
        return []
    if c.results is None:  # the driver's column type codes are known from now on
        found = []
        for i, (type_, desc) in enumerate(zip(c.types, cursor.description, strict=True)):
            proc = type_._cached_result_processor(dialect, desc[1])
            if proc is not None:
                found.append((i, proc))
        c.results = tuple(found)
    fetched = cursor.fetchall()
    if c.results:
        out = []
        for raw in fetched:
            values = list(raw)
            for i, proc in c.results:
                if values[i] is not None:  # NULL stays None for every type we use
                    values[i] = proc(values[i])
            out.append(tuple.__new__(c.row, values))
        return out
    row = c.row
    return [tuple.__new__(row, raw) for raw in fetched]


def execute(
    conn: Connection,
    stmt: Executable,
    params: Mapping[str, Any] | None = None,
    *,
    keys: tuple[str, ...] | None = None,
) -> Result:
    """Execute ``stmt`` with ``params`` (bind name -> value); ``keys`` names the columns
    of an ``INSERT`` compiled for exactly those values."""
    c = compiled_for(conn, stmt, keys)
    if c is None:
        result: Result = conn.execute(stmt, dict(params or {}))
        return result
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(c.sql, _args(c, params or {}))
        return _Result(_read(c, cursor, conn.dialect), cursor.rowcount)
    finally:
        cursor.close()


def execute_many(conn: Connection, stmt: Executable, rows: list[dict[str, Any]]) -> None:
    """``executemany`` of one ``INSERT`` shape (every row has the same keys).

    On psycopg2 a DBAPI ``executemany`` is one round trip a row: a few rows are sent
    as one string of statements (what ``psycopg2.extras.execute_batch`` does, the
    values quoted by the driver's ``mogrify``), more go through SQLAlchemy's batched
    ``insertmanyvalues``.
    """
    if not rows:
        return
    keys = tuple(sorted(rows[0]))
    c = compiled_for(conn, stmt, keys)
    if c is None or (c.order is None and len(rows) > 4):
        conn.execute(stmt, rows)
        return
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        if c.order is None and len(rows) > 1:  # psycopg2 (named parameters)
            cursor.execute(b";".join(cursor.mogrify(c.sql, _args(c, r)) for r in rows))
        else:
            cursor.executemany(c.sql, [_args(c, r) for r in rows])
    finally:
        cursor.close()
