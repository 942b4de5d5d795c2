"""The SQLite store on a real file: a write that finds SQLite's lock taken waits without stalling the
event loop; writers of other processes queue on the file lock, and a wait given up leaves nothing
held; the WAL is copied into the file by the store, not by a commit on the loop; rehearsed work
is replayed only when nothing it read has changed, and work that only creates is written by the
bulk writer, with others that queued meanwhile."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import (
    Column,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)

from app.fhir.outcome import ErrorCategory, FhirError
from app.storage.engine import create_engine
from app.storage.migrate import upgrade
from app.storage.process_lock import ProcessLock
from app.storage.repository import Create, Store, StoreSession, on_commit_of


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


_rows = Table("t", MetaData(), Column("a", Integer), Column("b", LargeBinary))


async def _count(session: StoreSession) -> int:
    return int((await session.connection.execute(select(func.count()).select_from(_rows))).scalar_one())


async def _values(store: Store) -> list[int]:
    async with store.reading() as session:
        return [row.a for row in await session.connection.execute(select(_rows.c.a).order_by(_rows.c.a))]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await _store(tmp_path / "store.db")
    yield opened
    await opened.close()


async def test_rehearsed_work_runs_once_and_its_writes_land(store: Store) -> None:
    calls = 0

    async def work(session: StoreSession) -> int:
        nonlocal calls
        calls += 1
        seen = await _count(session)
        await session.connection.execute(insert(_rows).values(a=seen + 10))
        return seen

    assert await store.rehearsed(work) == 0
    assert await store.rehearsed(work) == 1
    assert calls == 2  # once per unit: replayed, never run again
    assert await _values(store) == [10, 11]


async def test_a_read_that_changed_meanwhile_runs_the_work_again_in_the_transaction(store: Store) -> None:
    calls = 0

    async def work(session: StoreSession) -> int:
        nonlocal calls
        calls += 1
        seen = await _count(session)
        if calls == 1:  # another writer commits while this one is being rehearsed
            async with store.writing() as other:
                await other.connection.execute(insert(_rows).values(a=1))
        await session.connection.execute(insert(_rows).values(a=seen + 10))
        return seen

    assert await store.rehearsed(work) == 1
    assert calls == 2
    assert await _values(store) == [1, 11]  # nothing from the stale rehearsal


async def test_a_read_after_a_write_and_sql_text_are_not_rehearsed(store: Store) -> None:
    calls = 0

    async def read_after_write(session: StoreSession) -> int:
        nonlocal calls
        calls += 1
        await session.connection.execute(insert(_rows).values(a=1))
        return await _count(session)

    async def sql_text(session: StoreSession) -> None:
        nonlocal calls
        calls += 1
        await session.connection.execute(text("INSERT INTO t (a) VALUES (2)"))

    assert await store.rehearsed(read_after_write) == 1  # it sees its own write
    await store.rehearsed(sql_text)
    assert calls == 4  # each stopped at once in its rehearsal, then run in the transaction
    assert await _values(store) == [1, 2]  # the text INSERT ran once, in the transaction


async def test_a_write_that_does_not_do_what_was_rehearsed_rolls_back_and_runs_again(store: Store) -> None:
    async with store.writing() as session:
        await session.connection.execute(insert(_rows).values(a=1))
    calls = 0

    async def work(session: StoreSession) -> None:
        nonlocal calls
        calls += 1
        await session.connection.execute(insert(_rows).values(a=2))
        changed = await session.connection.execute(update(_rows).where(_rows.c.a == 1).values(b=b"x"))
        if calls == 1:  # meanwhile, without a read of the work's to notice it, the row goes
            async with store.writing() as other:
                await other.connection.execute(delete(_rows).where(_rows.c.a == 1))
        if changed.rowcount != 1:
            raise LookupError("row 1 is gone")

    with pytest.raises(LookupError):
        await store.rehearsed(work)
    assert calls == 2
    assert await _values(store) == []  # the replayed insert was rolled back with the transaction


async def test_replays_that_queued_meanwhile_commit_together_and_one_that_diverges_runs_alone(store: Store) -> None:
    commits = 0

    @event.listens_for(store.writes.sync_engine, "commit")
    def _committed(_connection: object) -> None:
        nonlocal commits
        commits += 1

    calls: list[int] = []
    release = asyncio.Event()

    async def blocker() -> None:  # holds the write turn while the others rehearse and queue
        async with store.writing() as session:
            await session.connection.execute(insert(_rows).values(a=1))
            await release.wait()

    def own_row(key: int) -> Callable[[StoreSession], Awaitable[None]]:
        async def work(session: StoreSession) -> None:
            calls.append(key)
            if (await session.connection.execute(select(_rows.c.a).where(_rows.c.a == key))).first() is None:
                await session.connection.execute(insert(_rows).values(a=key))

        return work

    async def counts_row_one(session: StoreSession) -> None:  # what it reads, the blocker changes
        calls.append(100)
        seen = (await session.connection.execute(select(func.count()).where(_rows.c.a == 1))).scalar_one()
        await session.connection.execute(insert(_rows).values(a=100 + seen))

    holding = asyncio.create_task(blocker())
    await asyncio.sleep(0.05)
    works = [asyncio.create_task(store.rehearsed(w)) for w in (own_row(2), own_row(3), counts_row_one, own_row(4))]
    async with asyncio.timeout(10):
        while len(calls) < 4:  # all rehearsed, all waiting for the turn
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    commits = 0
    release.set()
    await asyncio.wait_for(asyncio.gather(holding, *works), 10)
    assert sorted(calls) == [2, 3, 4, 100, 100]  # only the one whose read changed ran again
    assert commits == 3  # the blocker, the three replays together, the one that ran again
    assert await _values(store) == [1, 2, 3, 4, 101]


async def test_replays_that_only_create_are_written_in_one_go_and_one_whose_id_was_taken_runs_alone(tmp_path: Path) -> None:
    store = Store(create_engine(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"))
    await upgrade(store.engine)
    statements: list[str] = []
    committed: list[str] = []
    on_commit_of(store.writes, ["Basic"], lambda: committed.append("Basic"))

    @event.listens_for(store.writes.sync_engine, "before_cursor_execute")
    def _seen(_connection: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement.split(" ", 1)[0])

    def create(resource_id: str) -> Callable[[StoreSession], Awaitable[None]]:
        async def work(session: StoreSession) -> None:
            await session.apply(Create("Basic", resource_id, b"{}", datetime(2026, 12, 1)))

        return work

    async def queued_behind(blocker: Callable[[StoreSession], Awaitable[None]], ids: list[str]) -> list[BaseException | None]:
        release = asyncio.Event()

        async def holding() -> None:  # holds the write turn while the creates rehearse and queue
            async with store.writing() as session:
                await blocker(session)
                await release.wait()

        held = asyncio.create_task(holding())
        await asyncio.sleep(0.05)
        works = [asyncio.create_task(store.rehearsed(create(i))) for i in ids]
        async with asyncio.timeout(10):
            while store._bulk is None or store._bulk._queue.qsize() < len(ids):  # all queued
                await asyncio.sleep(0.01)
        release.set()
        await held
        statements.clear()
        committed.clear()
        return list(await asyncio.wait_for(asyncio.gather(*works, return_exceptions=True), 10))

    async def nothing(_session: StoreSession) -> None:
        return None

    try:
        assert await queued_behind(nothing, ["a", "b", "c"]) == [None, None, None]
        assert statements == []  # written by the bulk writer, not in a transaction of the engine's
        assert committed == ["Basic"] * 3  # the definitions' cache, say, hears of each
        outcomes = await queued_behind(create("e"), ["d", "e", "f"])  # "e" is taken while they wait
        assert outcomes[0] is None and outcomes[2] is None
        assert isinstance(outcomes[1], FhirError) and outcomes[1].category is ErrorCategory.CONFLICT
        # Written together they failed: replayed in one transaction instead, under one savepoint
        # (rolled back), then one each; "e" then runs on its own and meets the conflict.
        assert statements.count("SAVEPOINT") == 4
        assert committed == ["Basic"]
        async with store.reading() as session:
            assert [await session.current("Basic", i) is not None for i in "abcdef"] == [True] * 6
    finally:
        await store.close()
