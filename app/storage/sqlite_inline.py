"""SQLite for SQLAlchemy's async engine, run on the event loop's own thread.

aiosqlite runs every call on a thread of its own and hands the result back through the loop:
SQLAlchemy makes four such calls a statement (cursor, execute, fetch, close), ~0.25 ms each on the
2-core machine against ~3 µs for the statement itself. A referral message's dozen statements
spent ~10 ms there, most of it inside its write transaction, which holds SQLite's only write lock.
Statements here run where they are called. The one that can wait on another process, BEGIN
IMMEDIATE (SQLite's write lock), waits on a thread when the lock is taken, so a foreign writer
never stalls the loop.

This is the surface of `aiosqlite.Connection` that SQLAlchemy's aiosqlite dialect and `bulk.py`
use, nothing more; it is passed to the engine as its `async_creator`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["InlineConnection"]


class InlineConnection:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn = connection
        self._tx = _RunNow()  # SQLAlchemy's isolation-level setter queues its work here

    @property
    def _connection(self) -> sqlite3.Connection:  # SQLAlchemy checks it before commit/rollback
        return self._conn

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: Any) -> None:
        self._conn.isolation_level = value

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    def cursor(self) -> _Opening:
        return _Opening(self._conn)

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> InlineCursor:
        cursor = InlineCursor(self._conn.cursor())
        return await cursor.execute(sql, parameters)

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def close(self) -> None:
        self._conn.close()

    def stop(self) -> None:
        self._conn.close()


class InlineCursor:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> InlineCursor:
        if sql.lstrip()[:15].upper() != "BEGIN IMMEDIATE":
            self._cursor.execute(sql, parameters)
        elif not _begin_at_once(self._cursor, sql):
            # Another process holds the write lock: wait for it (up to the busy timeout) on a thread.
            await asyncio.to_thread(self._cursor.execute, sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Sequence[Any]) -> InlineCursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


def _begin_at_once(cursor: sqlite3.Cursor, sql: str) -> bool:
    """BEGIN IMMEDIATE if the write lock is free now; False, and nothing begun, if it is not.
    A write transaction that never waits never gives the loop to other requests while it holds
    the lock (a thread hop did, and their validation then ran inside our transaction's time)."""
    (timeout,) = cursor.execute("PRAGMA busy_timeout").fetchone()
    cursor.execute("PRAGMA busy_timeout=0")
    try:
        cursor.execute(sql)
        return True
    except sqlite3.OperationalError as error:
        if error.sqlite_errorcode != sqlite3.SQLITE_BUSY:
            raise
        return False
    finally:
        cursor.execute(f"PRAGMA busy_timeout={int(timeout)}")


class _Opening:
    """What `cursor()` returns: SQLAlchemy enters it to get the cursor."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    async def __aenter__(self) -> InlineCursor:
        return InlineCursor(self._connection.cursor())

    async def __aexit__(self, *_: object) -> None:
        return None


class _RunNow:
    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as error:
            future.set_exception(error)
