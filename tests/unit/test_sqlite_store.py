"""The SQLite store on a real file: a write that finds SQLite's lock taken waits without stalling the
event loop; writers of other processes queue on the file lock, and a wait given up leaves nothing
held; the WAL is copied into the file by the store, not by a commit on the loop."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

from sqlalchemy import text

from app.storage.engine import create_engine
from app.storage.process_lock import ProcessLock
from app.storage.repository import Store


async def _store(path: Path) -> Store:
    store = Store(create_engine(f"sqlite+aiosqlite:///{path}"))
    async with store.writing() as session:
        await session.connection.execute(text("CREATE TABLE t (a INTEGER, b BLOB)"))
    return store


async def _ticks(seconds: float) -> int:
    """How many 10 ms sleeps the loop fits in `seconds` (few if something blocks it)."""
    count = 0
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
        count += 1
    return count


async def test_a_write_waiting_for_another_connections_lock_leaves_the_loop_free(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = await _store(path)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # a writer outside BackPath holds SQLite's lock

        async def write() -> None:
            async with store.writing() as session:
                await session.connection.execute(text("INSERT INTO t (a) VALUES (1)"))

        waiting = asyncio.create_task(write())
        assert await _ticks(0.3) >= 10
        assert not waiting.done()
        other.execute("COMMIT")
        await asyncio.wait_for(waiting, 10)
        assert other.execute("SELECT a FROM t").fetchall() == [(1,)]
    finally:
        other.close()
        await store.close()


async def test_writers_queue_on_the_file_lock_and_a_wait_given_up_holds_nothing(tmp_path: Path) -> None:
    first, second, third = (ProcessLock(str(tmp_path / "store.db")) for _ in range(3))
    order: list[str] = []
    async with first.held():
        # A flock belongs to its open file: another one conflicts even in the same process.
        async def take() -> None:
            async with second.held():
                order.append("second")

        queued = asyncio.create_task(take())
        await asyncio.sleep(0.2)
        assert not queued.done()
        order.append("first done")
    await asyncio.wait_for(queued, 5)
    assert order == ["first done", "second"]

    async with first.held():
        given_up = asyncio.create_task(asyncio.wait_for(_enter(second), 0.2))
        await asyncio.gather(given_up, return_exceptions=True)
        assert isinstance(given_up.exception(), TimeoutError)
    # The abandoned wait got the lock once `first` let go, and gave it back at once.
    await asyncio.wait_for(_enter(third), 5)


async def _enter(lock: ProcessLock) -> None:
    async with lock.held():
        pass


async def test_the_store_checkpoints_the_wal_and_its_commits_do_not(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = await _store(path)
    try:
        async with store.engine.connect() as connection:
            assert (await connection.execute(text("PRAGMA wal_autocheckpoint"))).scalar() == 0
        written = 0
        for group in range(6):
            for _ in range(10):
                async with store.writing() as session:
                    await session.connection.execute(text("INSERT INTO t (a, b) VALUES (:a, :b)"), {"a": group, "b": os.urandom(50_000)})
                written += 50_000
            await asyncio.sleep(0.3)  # the store checkpoints at most every 0.25 s
        # Without checkpoints the WAL would hold all 3 MB; a checkpoint lets the next writer start
        # it again from the beginning.
        assert os.path.getsize(f"{path}-wal") < written / 2
    finally:
        await store.close()
