"""The async engine for SQLite (default) or PostgreSQL, with the settings each needs."""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.storage.bulk import sqlite_file
from app.storage.sqlite_inline import InlineConnection

__all__ = ["WRITE", "DatabaseError", "RowsRefused", "create_engine"]

# What the database driver raises when the database cannot do what was asked (down, busy, ...),
# named here so services can tell it apart without importing SQLAlchemy.
DatabaseError = DBAPIError
# The database errors that are the written rows' own fault (a constraint, a value): retrying cannot help.
RowsRefused = (IntegrityError, DataError)

# Execution option marking a connection that will write: SQLite then takes its write lock up front.
WRITE = "backpath_write"
_MMAP_BYTES = 1 << 30


def create_engine(url: str, connections: int = 20) -> AsyncEngine:
    """An engine for `url` with a pool of `connections` (SQLite; more may open when all are in
    use, unless it is one); SQLite gets WAL, a busy timeout and write transactions that lock early."""
    if url.startswith("sqlite"):
        arguments, options = make_url(url).get_dialect()().create_connect_args(make_url(url))

        async def connect() -> InlineConnection:
            # BEGIN IMMEDIATE waits on a thread (see sqlite_inline): the connection moves between threads.
            return InlineConnection(sqlite3.connect(arguments[0], **{**options, "timeout": 30, "check_same_thread": False}))

        # A pool big enough that connections (PRAGMAs and page cache each) are reused, not reopened.
        engine = create_async_engine(url, async_creator=connect, pool_size=connections, max_overflow=0 if connections == 1 else connections // 2)
        _configure_sqlite(engine)
        return engine
    # JIT compilation costs ~140 ms on large search plans and never pays off for OLTP queries.
    return create_async_engine(
        url, pool_size=10, max_overflow=20, pool_pre_ping=True, connect_args={"server_settings": {"jit": "off"}}
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    on_file = sqlite_file(engine) is not None

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Leave transaction control to the "begin" hook below instead of the driver's implicit BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash; only a power loss may lose the last commits.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Pages read through a mapping of the file: a connection's cache is dropped whenever another
        # connection wrote, and re-reading the pages a write touches cost ~10 % of a message's CPU.
        cursor.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")
        if on_file:
            # The Store copies the WAL into the file on a thread (Store._checkpoint_soon), not at a
            # commit on the event loop; a file's writers all go through a Store.
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A deferred transaction that reads and then writes fails with SQLITE_BUSY under concurrent
        # writers; IMMEDIATE queues on the busy timeout instead, so no update is lost or refused.
        immediate = connection.get_execution_options().get(WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
