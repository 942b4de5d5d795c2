"""A unit of write work rehearsed on a snapshot, then replayed in the write transaction.

SQLite has one writer at a time. A referral message spends most of its write transaction checking,
indexing and serialising the records it creates, not writing them. Rehearsed, that work runs while
others write: its reads run on a snapshot and are recorded with the rows they returned, its writes
are held back. In the write transaction the reads run again. When each returns the same rows,
nothing the work decided on has changed (writers are serialised), so its writes are applied as
they were held. Otherwise the work runs again, in the transaction. A read after a held-back write
is not rehearsed (it would not see that write): the work then runs in the transaction from the start.

Replays queued while one is being committed are committed together, each under a savepoint of its
own (group commit): one transaction, one commit and one WAL write of shared pages for many. Work
that read nothing and only inserts (a create) is not replayed at all: the store has its rows
inserted by the bulk writer (bulk.py). Only when that fails is it replayed here; such replays share
one savepoint, and are replayed one by one only if one fails (an id taken meanwhile).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from app.storage.bulk import Statements, StoredRows, insert_statements, run_statements

__all__ = ["CannotRehearse", "Diverged", "HeldInserts", "Recording", "Replays", "WriteStep"]

# A held-back write, applied to the write transaction's connection: False when it did not do what
# the rehearsal assumed.
WriteStep = Callable[[AsyncConnection], Awaitable[bool]]


class CannotRehearse(Exception):
    """The work reads after writing, or needs the driver itself: it runs in the transaction."""


class Diverged(Exception):
    """A replayed write did not do what the rehearsal assumed: the transaction is rolled back."""


class _HeldResult:
    """What a held-back write returns: one row affected, which the replay checks if it was read."""

    def __init__(self) -> None:
        self.assumed = False

    @property
    def rowcount(self) -> int:
        self.assumed = True
        return 1


@dataclass(frozen=True)
class HeldInserts:
    """Inserts of a rehearsal's creates, their rows converted ahead of the write turn (building them
    there cost a third of a create's time in it)."""

    rows: Sequence[StoredRows]

    @cached_property
    def statements(self) -> Statements:
        return insert_statements(self.rows)

    async def __call__(self, connection: AsyncConnection) -> bool:
        await run_statements(connection, self.statements)
        return True


@dataclass
class Recording:
    """Stands in for a write transaction's connection while the work is rehearsed on `snapshot`."""

    snapshot: AsyncConnection
    reads: list[tuple[Any, Any, Sequence[Any]]] = field(default_factory=list)
    writes: list[WriteStep] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # the connection's info, given to the real one

    @property
    def dialect(self) -> Any:
        return self.snapshot.dialect

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        if getattr(statement, "is_dml", False):
            held = _HeldResult()

            async def write(connection: AsyncConnection) -> bool:
                result = await connection.execute(statement, parameters)
                return not held.assumed or result.rowcount == 1

            self.hold(write)
            return held
        if not getattr(statement, "is_select", False) or getattr(statement, "is_text", False):
            raise CannotRehearse("only SQLAlchemy's own SELECTs are known to be reads")
        if self.writes:
            raise CannotRehearse("a read after a write")
        frozen = (await self.snapshot.execute(statement, parameters)).freeze()
        self.reads.append((statement, parameters, frozen.data))
        return frozen()

    async def exec_driver_sql(self, *_: Any) -> Any:
        raise CannotRehearse("SQL on the driver")

    async def get_raw_connection(self) -> Any:
        raise CannotRehearse("the driver's connection")

    def hold(self, write: WriteStep) -> None:
        self.writes.append(write)

    @property
    def inserts_only(self) -> bool:
        """Nothing read, only new rows written: its replay cannot find anything changed."""
        return not self.reads and all(isinstance(write, HeldInserts) for write in self.writes)

    async def replay(self, connection: AsyncConnection) -> bool:
        """In the write transaction on `connection`: False, with nothing written, when a read now
        returns other rows; else the writes are made (`Diverged` when one does not do as assumed)."""
        for statement, parameters, rows in self.reads:
            if (await connection.execute(statement, parameters)).freeze().data != rows:
                return False
        try:
            for write in self.writes:
                if not await write(connection):
                    raise Diverged
        except IntegrityError:  # taken meanwhile, by a write the reads did not cover
            raise Diverged from None
        for key, value in self.info.items():
            known = connection.info.get(key)
            connection.info[key] = known | value if isinstance(known, set) and isinstance(value, set) else value
        return True


class Replays:
    """Rehearsals waiting to be replayed, committed by one task while any are waiting."""

    def __init__(self, transaction: Callable[[], AbstractAsyncContextManager[AsyncConnection]]) -> None:
        self._transaction = transaction  # a write transaction's connection, committed when it ends
        self._waiting: list[tuple[Recording, asyncio.Future[bool]]] = []
        self._committer: asyncio.Task[None] | None = None

    async def replayed(self, rehearsal: Recording) -> bool:
        """Whether `rehearsal` was replayed and committed. False: nothing of it was written, and its
        work is to run in a transaction of its own (something it read changed, or the commit failed)."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((rehearsal, done))
        if self._committer is None:
            self._committer = asyncio.create_task(self._commit_while_waiting())
        # Each waits for its own answer: a lock taken in turn by every waiter woke them one loop
        # iteration after another, ~0.5 s for a batch under 50 clients.
        return await done  # cancelled before its batch is taken, it is not written

    async def _commit_while_waiting(self) -> None:
        try:
            while self._waiting:
                await self._commit()
        finally:
            self._committer = None
            for _, done in self._take():  # left by a committer cancelled at shut-down
                done.set_result(False)

    async def _commit(self) -> None:
        batch: list[tuple[Recording, asyncio.Future[bool]]] = []
        outcomes: list[bool] = []
        committed = False
        try:
            async with self._transaction() as connection:
                batch = self._take()  # in the write turn: with those that queued while it was awaited
                if len(batch) == 1:  # no savepoint needed: a replay that diverges rolls it all back
                    outcomes.append(await batch[0][0].replay(connection))
                else:
                    outcomes += await _replay_all(connection, [rehearsal for rehearsal, _ in batch])
            committed = True
        except Exception:  # nothing was written: each work runs on its own, and meets the error there
            batch = batch or self._take()  # no transaction could be opened: those waiting, too
        finally:
            for i, (_, done) in enumerate(batch):
                if not done.done():
                    done.set_result(committed and outcomes[i])

    def _take(self) -> list[tuple[Recording, asyncio.Future[bool]]]:
        """The waiting rehearsals still wanted (a cancelled request's is dropped, not written)."""
        taken, self._waiting = [entry for entry in self._waiting if not entry[1].done()], []
        return taken


async def _replay_all(connection: AsyncConnection, rehearsals: list[Recording]) -> list[bool]:
    """Each replayed under a savepoint of its own, but runs of inserts only under one for the run:
    one by one only when one of the run fails (a client's id taken meanwhile)."""
    outcomes: list[bool] = []
    for inserts_only, grouped in itertools.groupby(rehearsals, key=lambda rehearsal: rehearsal.inserts_only):
        run = list(grouped)
        if inserts_only and len(run) > 1 and await _replay_together(connection, run):
            outcomes += [True] * len(run)
        else:
            outcomes += [await _replay_one(connection, rehearsal) for rehearsal in run]
    return outcomes


async def _replay_together(connection: AsyncConnection, rehearsals: list[Recording]) -> bool:
    try:
        async with connection.begin_nested():
            for rehearsal in rehearsals:
                await rehearsal.replay(connection)  # nothing read, so it raises when it does not replay
    except Diverged:
        return False
    return True


async def _replay_one(connection: AsyncConnection, rehearsal: Recording) -> bool:
    try:
        async with connection.begin_nested():  # a replay that diverges takes only its own writes back
            if not await rehearsal.replay(connection):
                return False
    except Diverged:
        return False
    return True
