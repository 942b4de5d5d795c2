"""Rows inserted through the driver's own bulk path: COPY on PostgreSQL, multi-row INSERTs on SQLite.

For large batches of rows known to be new (server-generated ids, such as the audit trail's), this
costs a fraction of SQLAlchemy's per-row parameter handling. On PostgreSQL it runs on the caller's
connection, inside its transaction; on a SQLite file the whole transaction runs in one go on a
thread with a connection of its own, as a transaction run statement by statement from the event
loop holds SQLite's one write lock across a trip through the loop per statement. That thread also
writes the rows of creates (see `Store.rehearsed`) and the audit trail's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from sqlalchemy import DateTime, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.storage.process_lock import ProcessLock

__all__ = [
    "SqliteWriter",
    "Statements",
    "StoredRows",
    "TableRows",
    "insert_rows",
    "insert_statements",
    "run_statements",
    "sqlite_file",
    "sqlite_rows",
    "sqlite_statements",
]

# Rows per table: tuples in the table's column order, without its autoincrement column.
TableRows = Sequence[tuple[Table, Sequence[tuple[Any, ...]]]]
# One table's rows as SQLite stores them: its name, its columns, each row's values (see `sqlite_rows`).
StoredRows = tuple[str, tuple[str, ...], Sequence[Sequence[Any]]]
# SQL with its values, ready for the SQLite driver (see `sqlite_statements`).
Statements = Sequence[tuple[str, Sequence[Any]]]
# SQLite's smallest limit on a statement's parameters (SQLITE_MAX_VARIABLE_NUMBER before 3.32).
_VARIABLES = 999
_BUSY_SECONDS = 30  # as the engine's busy timeout
_CACHE_KIB = 64 * 1024


def _columns(table: Table) -> list[Any]:
    return [c for c in table.columns if c is not table.autoincrement_column]


# Driver errors that are the rows' own fault (a broken constraint, a value refused), not the store's.
_REFUSED_ROWS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, asyncpg.IntegrityConstraintViolationError)
_BAD_VALUES: tuple[type[Exception], ...] = (sqlite3.InterfaceError, sqlite3.DataError, sqlite3.ProgrammingError, asyncpg.DataError)


def _database_error(error: Exception) -> DBAPIError:
    """A driver's own error as the SQLAlchemy error the rest of the code sees: IntegrityError or
    DataError when the rows are at fault, OperationalError when the store cannot write now."""
    kind = IntegrityError if isinstance(error, _REFUSED_ROWS) else DataError if isinstance(error, _BAD_VALUES) else OperationalError
    return kind("bulk insert", None, error)


async def insert_rows(connection: AsyncConnection, tables: TableRows) -> None:
    """Insert the rows of each table on `connection`, all or none: COPY on PostgreSQL."""
    if connection.dialect.name != "postgresql":
        await run_statements(connection, sqlite_statements(connection.dialect, tables))
        return
    driver: Any = (await connection.get_raw_connection()).driver_connection
    try:
        # SQLAlchemy's asyncpg adapter begins its transaction only at its first statement: without
        # this one each COPY would commit on its own, and a failure leave an event half written.
        async with driver.transaction():
            for table, rows in tables:
                if rows:
                    await driver.copy_records_to_table(table.name, records=rows, columns=[c.name for c in _columns(table)])
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
        raise _database_error(error) from error


async def run_statements(connection: AsyncConnection, statements: Statements) -> None:
    """Run statements made by `sqlite_statements` on a SQLite connection's driver, in its transaction."""
    driver: Any = (await connection.get_raw_connection()).driver_connection
    try:
        for sql, values in statements:
            await driver.execute(sql, values)
    except (sqlite3.Error, OSError) as error:
        raise _database_error(error) from error


def sqlite_file(engine: AsyncEngine) -> str | None:
    """The database file of a SQLite engine; None for PostgreSQL and in-memory or URI databases."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:" or url.query:
        return None
    return url.database


def sqlite_rows(dialect: Dialect, tables: TableRows) -> list[StoredRows]:
    """The rows with their values converted as the dialect stores them (dates in SQLite's text form,
    as every other write stores them)."""
    converted: list[StoredRows] = []
    for table, rows in tables:
        columns = _columns(table)
        processors = [(i, _remembered(p) if isinstance(c.type, DateTime) else p) for i, c in enumerate(columns) if (p := c.type.dialect_impl(dialect).bind_processor(dialect))]
        values: list[list[Any]] = []
        for row in rows:
            stored = list(row)
            for i, process in processors:
                stored[i] = process(stored[i])
            values.append(stored)
        converted.append((table.name, tuple(c.name for c in columns), values))
    return converted


def _remembered(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A conversion that remembers its results: a batch's rows share a few timestamps (each
    resource's, on its version and date rows), and formatting each anew cost 5 % of writing them."""
    done: dict[Any, Any] = {}

    def remembered(value: Any) -> Any:
        if value not in done:
            done[value] = process(value)
        return done[value]

    return remembered


def insert_statements(tables: Sequence[StoredRows]) -> Statements:
    """Multi-row INSERTs of the rows, those of one table together, tables in the order they first
    come: a few statements where `executemany` would give up and retake the interpreter lock once
    per row."""
    merged: dict[tuple[str, tuple[str, ...]], list[Sequence[Any]]] = {}
    for name, columns, rows in tables:
        merged.setdefault((name, columns), []).extend(rows)
    statements: list[tuple[str, list[Any]]] = []
    for (name, columns), rows in merged.items():
        per_statement = max(1, _VARIABLES // len(columns))
        placeholders = "(" + ", ".join("?" * len(columns)) + ")"
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            values = [value for row in chunk for value in row]
            statements.append((f"INSERT INTO {name} ({', '.join(columns)}) VALUES {', '.join([placeholders] * len(chunk))}", values))
    return statements


def sqlite_statements(dialect: Dialect, tables: TableRows) -> Statements:
    """Multi-row INSERTs of the rows as SQLite stores them (see `sqlite_rows`, `insert_statements`)."""
    return insert_statements(sqlite_rows(dialect, tables))


class SqliteWriter:
    """Inserts rows into a SQLite file on a thread of its own, with one connection kept open there
    (a fresh one would read every page it touches again).

    The thread takes the file's writer lock itself and holds it only while it writes: taken for a
    turn on the event loop, the lock stayed held until the busy loop got round to the turn (p50
    13-19 ms under 50 clients) while every other writer waited. Once it has the lock, the thread
    writes all the rows queued by then in one transaction (group commit): a batch's callers wait
    only for the batch before it, not for the event loop to start theirs."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = ProcessLock(path)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-bulk")
        self._queue: queue.SimpleQueue[_Queued] = queue.SimpleQueue()
        self._connection: sqlite3.Connection | None = None  # used on the thread only

    async def insert(self, rows: Sequence[StoredRows]) -> None:
        """Insert `rows` in one transaction with those queued meanwhile, all or none: a failure leaves
        nothing of them written and is raised as SQLAlchemy's error (see `_database_error`), to each
        of their callers. A wait for the lock that outlasts the busy timeout writes nothing and is
        an OperationalError."""
        loop = asyncio.get_running_loop()
        queued = _Queued(rows, loop, loop.create_future())
        self._queue.put(queued)
        self._thread.submit(self._write_queued)
        try:
            await asyncio.wait_for(asyncio.shield(queued.done), _BUSY_SECONDS)
        except (TimeoutError, asyncio.CancelledError) as stopped:
            if queued.claim.abandon():  # still waiting for the lock: nothing of it is written
                if isinstance(stopped, TimeoutError):
                    raise _database_error(sqlite3.OperationalError("the write lock stayed taken")) from None
                raise
            await asyncio.shield(queued.done)  # being written already: that outcome stands
            if isinstance(stopped, asyncio.CancelledError):
                raise

    async def checkpoint(self, in_turn: bool = False) -> None:
        """Copy committed pages from the WAL into the database file, on this thread. PASSIVE: it
        neither waits for nor blocks readers and writers; what it cannot copy now, a later one does.
        `in_turn`: holding the file's writer lock, so that nothing is appended meanwhile."""
        await asyncio.get_running_loop().run_in_executor(self._thread, self._checkpoint, in_turn)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._disconnect)
        self._thread.shutdown()

    def _write_queued(self) -> None:
        if self._queue.empty():  # written with an earlier call's batch
            return
        batch: list[_Queued] = []
        error: Exception | None = None
        try:
            fd = self._lock.take()
        except OSError as unreachable:
            fd, error = None, unreachable
        try:
            while not self._queue.empty():
                queued = self._queue.get_nowait()
                if queued.claim.start():
                    batch.append(queued)
            if batch and error is None:
                self._write(insert_statements([rows for queued in batch for rows in queued.rows]))
        except Exception as failed:
            error = failed
        finally:
            if fd is not None:
                os.close(fd)
            for queued in batch:  # each claimed write is settled, whatever happened
                with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits for it
                    queued.loop.call_soon_threadsafe(_settle, queued.done, error)

    def _write(self, statements: Statements) -> None:
        try:
            connection = self._connection or self._connect()
            connection.execute("BEGIN IMMEDIATE")
            for sql, values in statements:
                connection.execute(sql, values)
            connection.execute("COMMIT")
        except Exception:  # not only sqlite3's: a value it cannot bind must not leave the lock held
            self._disconnect()  # which rolls back what was begun; the next write connects anew
            raise

    def _checkpoint(self, in_turn: bool) -> None:
        fd = self._lock.take() if in_turn else None
        try:
            (self._connection or self._connect()).execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            self._disconnect()  # the next checkpoint connects anew and copies what this one left
        finally:
            if fd is not None:
                os.close(fd)

    def _connect(self) -> sqlite3.Connection:
        self._connection = sqlite3.connect(self._path, timeout=_BUSY_SECONDS, isolation_level=None)
        self._connection.execute("PRAGMA synchronous=NORMAL")  # as the engine's connections
        # The index pages its inserts touch, kept between writes: with SQLite's default 2 MB the
        # writer re-read most of them each batch once the database outgrew it (a 20 % throughput
        # cost of the audit trail at 250 MB, none with this).
        self._connection.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
        # Its commits never checkpoint, holding the lock: the Store does (see `Store._checkpoint_soon`).
        self._connection.execute("PRAGMA wal_autocheckpoint=0")
        return self._connection

    def _disconnect(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._connection = None


class _Claim:
    """Decides a write that waited for the lock: the thread that got the lock writes, unless the
    caller stopped waiting first; then nothing is written."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by: str | None = None

    def start(self) -> bool:
        return self._take("thread")

    def abandon(self) -> bool:
        return self._take("caller")

    def _take(self, by: str) -> bool:
        with self._lock:
            self._by = self._by or by
            return self._by == by


@dataclass
class _Queued:
    rows: Sequence[StoredRows]
    loop: asyncio.AbstractEventLoop
    done: asyncio.Future[None]
    claim: _Claim = field(default_factory=_Claim)


def _settle(done: asyncio.Future[None], error: Exception | None) -> None:
    """On the caller's loop: its outcome, a database error of its own (one shared by the batch's
    callers would collect each one's traceback)."""
    if done.done():
        return
    if error is None:
        done.set_result(None)
    elif isinstance(error, sqlite3.Error | OSError):
        done.set_exception(_database_error(error))
    else:
        done.set_exception(error)
