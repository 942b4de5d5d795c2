"""The SQLite bulk writer: one transaction per batch on a connection of its own, all or nothing; its
failures are SQLAlchemy's errors, the rows' own fault told apart from an outage (which the audit
trail retries), and none leaves SQLite's write lock held. Its thread holds the file's writer lock
only while it writes, a wait given up writes nothing, and rows queued meanwhile go in one commit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from app.storage import bulk
from app.storage.bulk import SqliteWriter, StoredRows
from app.storage.process_lock import ProcessLock


def _rows(path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(path) as connection:
        return sorted(connection.execute("SELECT a, b FROM t").fetchall())


def _t(*rows: tuple[object, object]) -> list[StoredRows]:
    return [("t", ("a", "b"), [list(row) for row in rows])]


def _file(tmp_path: Path) -> Path:
    path = tmp_path / "bulk.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT NOT NULL)")
        connection.execute("CREATE TABLE u (a INTEGER PRIMARY KEY)")
    return path


def _u(*keys: object) -> list[StoredRows]:
    return [("u", ("a",), [[key] for key in keys])]


async def test_a_failing_batch_leaves_nothing_written_and_the_next_write_goes_through(tmp_path: Path) -> None:
    path = _file(tmp_path)
    writer = SqliteWriter(str(path))
    try:
        await writer.insert(_t((1, "one"), (2, "two")))
        with pytest.raises(IntegrityError):  # the rows' own fault: not worth retrying
            await writer.insert(_t((3, "three"), (1, "again")))
        # A failing statement after one that went through (another table's) takes that one back.
        with pytest.raises(IntegrityError):
            await writer.insert([*_t((4, "four")), *_u(1, 1)])
        with pytest.raises(DataError):  # a value it cannot bind
            await writer.insert([*_t((5, "five")), *_u({"no": "dict"})])
        with pytest.raises(OperationalError):
            await writer.insert([("missing", ("a",), [[1]])])
        assert _rows(path) == [(1, "one"), (2, "two")]
        await writer.insert(_t((3, "three")))
        assert _rows(path) == [(1, "one"), (2, "two"), (3, "three")]
    finally:
        await writer.close()


async def test_an_unreachable_file_is_an_outage(tmp_path: Path) -> None:
    writer = SqliteWriter(str(tmp_path / "no-such-folder" / "bulk.db"))
    try:
        with pytest.raises(OperationalError):
            await writer.insert(_t((1, "one")))
    finally:
        await writer.close()


async def test_the_lock_is_held_only_while_writing_and_a_wait_given_up_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _file(tmp_path)
    other = ProcessLock(str(path))  # another process's writer
    writer = SqliteWriter(str(path))
    try:
        async with other.held():
            waiting = asyncio.create_task(writer.insert(_t((1, "one"))))
            await asyncio.sleep(0.2)
            assert not waiting.done() and _rows(path) == []
        await asyncio.wait_for(waiting, 5)
        async with asyncio.timeout(1):  # given back once written
            async with other.held():
                pass

        monkeypatch.setattr(bulk, "_BUSY_SECONDS", 0.2)
        async with other.held():
            with pytest.raises(OperationalError):
                await writer.insert(_t((2, "two")))
        await writer.insert(_t((3, "three")))  # after the abandoned one, which wrote nothing
        assert _rows(path) == [(1, "one"), (3, "three")]
    finally:
        await writer.close()


async def test_rows_queued_while_the_lock_is_taken_are_written_in_one_commit_all_or_none(tmp_path: Path) -> None:
    path = _file(tmp_path)
    other = ProcessLock(str(path))
    writer = SqliteWriter(str(path))
    commits = 0

    def counted(path: str) -> sqlite3.Connection:
        connection = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)

        def trace(statement: str) -> None:
            nonlocal commits
            commits += statement == "COMMIT"

        connection.set_trace_callback(trace)
        return connection

    writer._connection = counted(str(path))
    try:
        async with other.held():
            together = [asyncio.create_task(writer.insert(_t((i, str(i))))) for i in (1, 2, 3)]
            await asyncio.sleep(0.2)
        await asyncio.wait_for(asyncio.gather(*together), 5)
        assert commits == 1 and _rows(path) == [(1, "1"), (2, "2"), (3, "3")]

        async with other.held():
            failing = [asyncio.create_task(writer.insert(_t((i, str(i))))) for i in (4, 1, 5)]  # 1 is taken
            await asyncio.sleep(0.2)
        outcomes = await asyncio.wait_for(asyncio.gather(*failing, return_exceptions=True), 5)
        assert all(isinstance(outcome, IntegrityError) for outcome in outcomes)
        assert _rows(path) == [(1, "1"), (2, "2"), (3, "3")]
    finally:
        await writer.close()
