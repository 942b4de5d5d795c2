"""The SQLite bulk writer: one transaction per write on a connection of its own, all or nothing; its
failures are SQLAlchemy's errors, the rows' own fault told apart from an outage (which the audit
trail retries), and none leaves SQLite's write lock held."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from app.storage.bulk import SqliteWriter


def _rows(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as connection:
        return sorted(connection.execute("SELECT a, b FROM t").fetchall())


async def test_a_failing_statement_leaves_nothing_written_and_the_next_write_goes_through(tmp_path: Path) -> None:
    path = tmp_path / "bulk.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT NOT NULL)")
    writer = SqliteWriter(str(path))
    try:
        await writer.write([("INSERT INTO t (a, b) VALUES (?, ?), (?, ?)", [1, "one", 2, "two"])])
        with pytest.raises(IntegrityError):  # the rows' own fault: not worth retrying
            await writer.write([("INSERT INTO t (a, b) VALUES (?, ?)", [3, "three"]), ("INSERT INTO t (a, b) VALUES (?, ?)", [1, "again"])])
        with pytest.raises(DataError):  # a value it cannot bind, after a statement that went through
            await writer.write([("INSERT INTO t (a, b) VALUES (?, ?)", [4, "four"]), ("INSERT INTO t (a, b) VALUES (?, ?)", [5, {"no": "dict"}])])
        with pytest.raises(OperationalError):
            await writer.write([("INSERT INTO missing (a) VALUES (?)", [1])])
        assert _rows(path) == [(1, "one"), (2, "two")]
        await writer.write([("INSERT INTO t (a, b) VALUES (?, ?)", [3, "three"])])
        assert _rows(path) == [(1, "one"), (2, "two"), (3, "three")]
    finally:
        await writer.close()


async def test_an_unreachable_file_is_an_outage(tmp_path: Path) -> None:
    writer = SqliteWriter(str(tmp_path / "no-such-folder" / "bulk.db"))
    try:
        with pytest.raises(OperationalError):
            await writer.write([("SELECT 1", [])])
    finally:
        await writer.close()
