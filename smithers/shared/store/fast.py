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

**Pipelined transactions (PostgreSQL).** A round trip to the server costs about
90 µs of wall time before the statement does anything, and a step's transaction ran
a dozen of them. A write connection in pipelined mode (:class:`Pipeline`, DBAPI
autocommit, the transaction opened and closed with our own ``BEGIN``/``COMMIT``)
queues the statements whose result nobody reads (:func:`defer`: inserts, upserts,
updates whose row count is unused, the events) and sends them, already quoted by the
driver's ``mogrify``, in front of the next statement that must return something, or
in front of ``COMMIT``; ``BEGIN`` itself rides on the first one. Order is kept, so
every read sees the writes queued before it; a statement run through SQLAlchemy
sends the queue first (a ``before_cursor_execute`` hook, :mod:`smithers.shared.store.postgres`).
An error in a queued statement surfaces at the next round trip of the same
transaction, which then rolls back as it would have anyway.
"""

from __future__ import annotations

import re
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable

PIPELINE = "smithers_pipeline"  # Connection.info key of the open Pipeline, if any
PREPARED = "smithers_prepared"  # Connection.info key of the session's Prepared statements
_DUPLICATE_PREPARED = "42P05"  # SQLSTATE duplicate_prepared_statement


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
    dollar: tuple[str, tuple[str, ...]] | None = None  # ($n SQL, bind names in $ order): PREPARE


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


def _cursor(conn: Connection) -> closing[Any]:
    """A DBAPI cursor of ``conn``, closed when the ``with`` block ends."""
    return closing(conn.connection.dbapi_connection.cursor())  # type: ignore[union-attr]


_PYFORMAT = re.compile(r"%\(([^)]+)\)s|%%")


def _dollar(c: _Compiled) -> tuple[str, tuple[str, ...]]:
    """``c.sql`` with ``$1, $2, ...`` for its ``%(name)s`` binds, and the names in order."""
    if c.dollar is None:
        names: list[str] = []

        def number(m: re.Match[str]) -> str:
            if m.group(0) == "%%":
                return "%"
            if m.group(1) not in names:
                names.append(m.group(1))
            return f"${names.index(m.group(1)) + 1}"

        c.dollar = (_PYFORMAT.sub(number, c.sql), tuple(names))
    return c.dollar


class Prepared:
    """Statements prepared on one PostgreSQL session (SQL ``PREPARE``), by SQL text.

    A statement's first use runs it as text and queues it; :func:`prepare_queued`
    prepares what is queued once the transaction is over (a failed ``PREPARE`` inside
    a transaction would abort it), and later uses send ``EXECUTE name(args)``: no
    parsing or planning on the server. A statement the server refuses to prepare
    stays text.
    """

    __slots__ = ("dbapi", "names", "queued")

    def __init__(self, dbapi: Any) -> None:
        self.dbapi = dbapi  # the session the names belong to
        self.names: dict[str, str | None] = {}  # SQL -> name (None: refused)
        self.queued: dict[str, _Compiled] = {}


def enable_prepare(conn: Connection) -> None:
    """Prepare the hot statements run on ``conn`` (a thread's own PostgreSQL connection)."""
    conn.info[PREPARED] = Prepared(conn.connection.dbapi_connection)


def _prepared(conn: Connection) -> Prepared | None:
    prepared: Prepared | None = conn.info.get(PREPARED)
    if prepared is None or prepared.dbapi is not conn.connection.dbapi_connection:
        return None
    return prepared


def _text(cursor: Any, c: _Compiled, args: Any, prepared: Prepared | None) -> bytes:
    """The statement as text for ``cursor.execute``: ``EXECUTE`` of its prepared form
    if there is one, else its SQL with the values quoted by the driver."""
    if prepared is not None:
        name = prepared.names.get(c.sql, "")
        if name:
            names = _dollar(c)[1]
            if not names:
                return f"EXECUTE {name}".encode()
            template = f"EXECUTE {name}({', '.join(['%s'] * len(names))})"
            return cursor.mogrify(template, tuple(args[n] for n in names))  # type: ignore[no-any-return]
        if name == "" and c.sql not in prepared.queued:
            prepared.queued[c.sql] = c
    return cursor.mogrify(c.sql, args)  # type: ignore[no-any-return]


def prepare_queued(conn: Connection) -> None:
    """``PREPARE`` the statements first used on ``conn`` since the last call; call it
    outside any transaction. One that the server refuses stays text; if the server is
    gone nothing is raised here (the connection's next use finds out and replaces it)."""
    prepared = _prepared(conn)
    if prepared is None or not prepared.queued:
        return
    queued, prepared.queued = prepared.queued, {}
    error = conn.dialect.loaded_dbapi.Error
    todo: list[tuple[str, str, str]] = []
    for sql, c in queued.items():
        name = f"smithers_{len(prepared.names) + len(todo) + 1}"
        todo.append((sql, name, f"PREPARE {name} AS {_dollar(c)[0]}"))
    with closing(prepared.dbapi.cursor()) as cursor:
        try:
            cursor.execute(";".join(statement for _, _, statement in todo))
        except error:  # one by one, to find the one refused
            for sql, name, statement in todo:
                refused = False
                try:
                    cursor.execute(statement)
                except error as exc:
                    if conn.dialect.is_disconnect(exc, prepared.dbapi, None):
                        return
                    # PREPARE is not transactional: those before the failure exist
                    refused = getattr(exc, "pgcode", None) != _DUPLICATE_PREPARED
                prepared.names[sql] = None if refused else name
        else:
            prepared.names.update((sql, name) for sql, name, _ in todo)


def execute(
    conn: Connection,
    stmt: Executable,
    params: Mapping[str, Any] | None = None,
    *,
    keys: tuple[str, ...] | None = None,
    first: tuple[str, Sequence[Any]] | None = None,
) -> Result:
    """Execute ``stmt`` with ``params`` (bind name -> value); ``keys`` names the columns
    of an ``INSERT`` compiled for exactly those values. ``first`` (PostgreSQL only) is
    hand-written SQL with ``%s`` placeholders and its values, sent in front of ``stmt``
    in the same round trip (on an autocommit connection both run in one implicit
    transaction; ``stmt`` reads with a snapshot taken after ``first`` ran)."""
    c = compiled_for(conn, stmt, keys)
    if c is None or (first is not None and c.order is not None):
        if first is not None:
            conn.exec_driver_sql(first[0], tuple(first[1]))
        result: Result = conn.execute(stmt, dict(params or {}))
        return result
    pipeline: Pipeline | None = conn.info.get(PIPELINE)
    prepared = _prepared(conn) if c.order is None else None
    with _cursor(conn) as cursor:
        try:
            args = _args(c, params or {})
            head = pipeline.take() if pipeline is not None and pipeline.sql else []
            if first is not None:
                head.append(cursor.mogrify(first[0], tuple(first[1])))
            if head or prepared is not None:
                cursor.execute(b";".join([*head, _text(cursor, c, args, prepared)]))
            else:
                cursor.execute(c.sql, args)
            return _Result(_read(c, cursor, conn.dialect), cursor.rowcount)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _wrap(conn, exc, c.sql) from exc


def defer(
    conn: Connection,
    stmt: Executable,
    params: Mapping[str, Any] | None = None,
    *,
    keys: tuple[str, ...] | None = None,
) -> None:
    """Run a write whose result is not needed: on a pipelined connection it is queued
    for the next round trip, elsewhere it runs now (:func:`execute`)."""
    pipeline: Pipeline | None = conn.info.get(PIPELINE)
    c = compiled_for(conn, stmt, keys) if pipeline is not None else None
    if pipeline is None or c is None:
        execute(conn, stmt, params, keys=keys)
        return
    with _cursor(conn) as cursor:
        pipeline.sql.append(_text(cursor, c, _args(c, params or {}), _prepared(conn)))


def execute_many(conn: Connection, stmt: Executable, rows: list[dict[str, Any]]) -> None:
    """``executemany`` of one ``INSERT`` shape (every row has the same keys).

    On psycopg2 a DBAPI ``executemany`` is one round trip a row: a few rows are sent
    as one string of statements (what ``psycopg2.extras.execute_batch`` does, the
    values quoted by the driver's ``mogrify``), more go through SQLAlchemy's batched
    ``insertmanyvalues``. (A pipelined transaction writes its events with
    :func:`defer_text` instead.)
    """
    if not rows:
        return
    keys = tuple(sorted(rows[0]))
    c = compiled_for(conn, stmt, keys)
    if c is None or (c.order is None and len(rows) > 4):
        conn.execute(stmt, rows)
        return
    with _cursor(conn) as cursor:
        try:
            if c.order is None and len(rows) > 1:  # psycopg2 (named parameters)
                cursor.execute(b";".join(cursor.mogrify(c.sql, _args(c, r)) for r in rows))
            else:
                cursor.executemany(c.sql, [_args(c, r) for r in rows])
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _wrap(conn, exc, c.sql) from exc


def pipelined(conn: Connection) -> bool:
    """Whether ``conn`` is in a pipelined transaction (see the module docstring)."""
    return conn.info.get(PIPELINE) is not None


def begun(conn: Connection) -> bool:
    """Whether the pipelined transaction of ``conn`` has reached the server."""
    pipeline: Pipeline | None = conn.info.get(PIPELINE)
    return pipeline is not None and pipeline.begun


def defer_text(conn: Connection, sql: str, args: Sequence[Any]) -> None:
    """Queue hand-written SQL with ``%s`` placeholders on a pipelined connection."""
    pipeline: Pipeline = conn.info[PIPELINE]
    with _cursor(conn) as cursor:
        pipeline.sql.append(cursor.mogrify(sql, tuple(args)))


class Pipeline:
    """The statements of a pipelined transaction waiting for the next round trip.

    ``sql`` starts as ``[BEGIN]``; ``begun`` is set once anything was sent, from then
    on the server holds an open transaction that must end in COMMIT or ROLLBACK.
    """

    __slots__ = ("begun", "sql")

    def __init__(self) -> None:
        self.sql: list[bytes] = [b"BEGIN"]
        self.begun = False

    def take(self) -> list[bytes]:
        """The queued statements, handed over for sending (the queue is emptied)."""
        out, self.sql = self.sql, []
        self.begun = True
        return out


def begin_pipeline(conn: Connection) -> Pipeline:
    """Open a pipelined transaction on ``conn`` (a PostgreSQL connection in DBAPI
    autocommit mode); nothing is sent until the first statement that needs a result."""
    pipeline = Pipeline()
    conn.info[PIPELINE] = pipeline
    return pipeline


def send_pipeline(conn: Connection, cursor: Any) -> None:
    """Send what is queued on ``conn``, if anything, through ``cursor`` (the hook for
    statements SQLAlchemy runs)."""
    pipeline: Pipeline | None = conn.info.get(PIPELINE)
    if pipeline is not None and pipeline.sql:
        cursor.execute(b";".join(pipeline.take()))


def end_pipeline(conn: Connection, *, commit: bool) -> None:
    """Commit (queue and ``COMMIT`` in one round trip) or roll back the pipelined
    transaction of ``conn``. A failed commit is rolled back before the error is raised."""
    pipeline: Pipeline | None = conn.info.pop(PIPELINE, None)
    if pipeline is None or (not pipeline.begun and (not commit or pipeline.sql == [b"BEGIN"])):
        return  # nothing reached the server (or nothing was written or read)
    with _cursor(conn) as cursor:
        try:
            if commit:
                try:
                    cursor.execute(b";".join([*pipeline.take(), b"COMMIT"]))
                    return
                except conn.dialect.loaded_dbapi.Error as exc:
                    error = _wrap(conn, exc, "COMMIT")
                if not error.connection_invalidated:
                    cursor.execute(b"ROLLBACK")  # the failed statement left the transaction open
                raise error
            cursor.execute(b"ROLLBACK")
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _wrap(conn, exc, "ROLLBACK") from exc


def _wrap(conn: Connection, exc: Exception, sql: str) -> DBAPIError:
    """The driver's error as SQLAlchemy's (``OperationalError``, ``IntegrityError``, ...),
    with ``connection_invalidated`` set when the server is gone."""
    dialect = conn.dialect
    dbapi_conn = conn.connection.dbapi_connection
    gone = bool(dialect.is_disconnect(exc, dbapi_conn, None))  # type: ignore[arg-type]
    wrapped = DBAPIError.instance(
        sql, None, exc, dialect.loaded_dbapi.Error, connection_invalidated=gone, dialect=dialect
    )
    return cast(DBAPIError, wrapped)
