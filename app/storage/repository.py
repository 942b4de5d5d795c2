"""The store: current versions, full history and the token index, behind one small interface.

Services describe writes as values (`Create`, `Update`, `Delete`) and apply them inside one
transaction; a version check in the UPDATE itself means concurrent writers never lose an update.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar, cast
from weakref import WeakKeyDictionary

import orjson
from sqlalchemy import Table, and_, delete, event, false, func, insert, or_, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.fhir.index import IndexEntries
from app.fhir.outcome import ErrorCategory, FhirError
from app.fhir.search_query import Include, SearchQuery
from app.storage.bulk import SqliteWriter, TableRows, insert_rows, sqlite_file, sqlite_rows
from app.storage.engine import WRITE, DatabaseError, create_engine
from app.storage.process_lock import ProcessLock
from app.storage.rehearsal import HeldInserts, Recording, Replays
from app.storage.schema import INDEX_TABLES, SORT_COLUMNS, resource, resource_version, token_index
from app.storage.search_sql import (
    count_statement,
    forward_include_statement,
    match_statement,
    page_statements,
    reverse_include_statement,
)

_CREATE_BATCH = 500
_EXACT_BELOW = 1000  # `_total=estimate`: counting fewer matches than this is cheap, so count them
_SQLITE_BUSY_SECONDS = 30  # as PRAGMA busy_timeout in engine.py
_CHECKPOINT_SECONDS = 0.25
T = TypeVar("T")

__all__ = [
    "Create",
    "Delete",
    "HistoryPage",
    "SearchPage",
    "Store",
    "StoreSession",
    "StoredVersion",
    "Update",
    "Write",
    "on_commit_of",
]

# Takes a turn to write to SQLite, held while the context is open.
# Connection info key: the resource types the open transaction wrote (see `on_commit_of`).
_TYPES_WRITTEN = "backpath_types_written"


@dataclass(frozen=True)
class StoredVersion:
    """One version of a resource as stored; `content` is None for a deletion."""

    type: str
    id: str
    version: int
    last_updated: datetime
    deleted: bool
    content: bytes | None
    method: str = ""


@dataclass(frozen=True)
class Create:
    type: str
    id: str
    content: bytes
    last_updated: datetime
    index: IndexEntries = field(default_factory=IndexEntries)


@dataclass(frozen=True)
class Update:
    """A new version; `expected_version` is the one it replaces (0 for create-on-update of a new id)."""

    type: str
    id: str
    expected_version: int
    content: bytes
    last_updated: datetime
    index: IndexEntries = field(default_factory=IndexEntries)
    method: str = "PUT"


@dataclass(frozen=True)
class Delete:
    type: str
    id: str
    expected_version: int
    last_updated: datetime


Write = Create | Update | Delete


@dataclass(frozen=True)
class HistoryPage:
    entries: list[tuple[int, StoredVersion]]
    total: int
    has_more: bool


@dataclass(frozen=True)
class SearchPage:
    """A page of matches in order, whether pages exist before and after it, and the sort values of
    its first and last match (for the cursors of the links)."""

    matches: list[StoredVersion]
    total: int | None
    has_next: bool
    has_previous: bool
    first_sort_values: tuple[Any, ...] = ()
    last_sort_values: tuple[Any, ...] = ()


@dataclass
class StoreSession:
    """Reads and (in a write transaction) writes on one database connection."""

    connection: AsyncConnection
    writable: bool = False
    # Creates are buffered and written together (one multi-row INSERT per table) before the next
    # read or other write and at commit: a transaction Bundle of 500 POSTs costs a few statements.
    pending: list[Create] = field(default_factory=list)
    recording: Recording | None = None  # while the work is rehearsed (see `Store.rehearsed`)

    async def current(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        """The latest version, deleted or not."""
        await self.flush()
        row = (
            await self.connection.execute(
                select(resource).where(resource.c.type == resource_type, resource.c.id == resource_id)
            )
        ).first()
        return None if row is None else _stored(row._mapping)

    async def version(self, resource_type: str, resource_id: str, version: int) -> StoredVersion | None:
        await self.flush()
        row = (
            await self.connection.execute(
                select(resource_version).where(
                    resource_version.c.type == resource_type,
                    resource_version.c.id == resource_id,
                    resource_version.c.version == version,
                )
            )
        ).first()
        return None if row is None else _stored(row._mapping)

    async def history(
        self,
        resource_type: str | None,
        resource_id: str | None,
        *,
        since: datetime | None,
        count: int,
        before_seq: int | None,
    ) -> HistoryPage:
        """Versions newest first, optionally of one type or one resource, paged by change sequence."""
        await self.flush()
        conditions = []
        if resource_type is not None:
            conditions.append(resource_version.c.type == resource_type)
        if resource_id is not None:
            conditions.append(resource_version.c.id == resource_id)
        if since is not None:
            conditions.append(resource_version.c.last_updated >= since)
        total = (await self.connection.execute(select(func.count()).select_from(resource_version).where(*conditions))).scalar_one()
        if before_seq is not None:
            conditions.append(resource_version.c.seq < before_seq)
        rows = (
            await self.connection.execute(
                select(resource_version).where(*conditions).order_by(resource_version.c.seq.desc()).limit(count + 1)
            )
        ).all()
        entries = [(row._mapping["seq"], _stored(row._mapping)) for row in rows[:count]]
        return HistoryPage(entries, total, len(rows) > count)

    async def search(self, query: SearchQuery) -> SearchPage:
        await self.flush()
        rows: list[Any] = []
        kinds: list[str] = []
        if query.count > 0:
            statements, kinds = page_statements(query)
            for statement in statements:  # until one row more than the page is found
                rows += (await self.connection.execute(statement)).all()
                if len(rows) > query.count:
                    break
        more = len(rows) > query.count
        total: int | None = None
        if query.total == "accurate" or query.count == 0:
            total = int((await self.connection.execute(count_statement(query))).scalar_one())
        elif query.total == "estimate":
            total = await self._estimate(query)
        elif query.total is None and query.cursor is None and not more:
            total = len(rows)  # the first page holds every match: the total is known for free
        page = rows[: query.count]
        backward = query.cursor is not None and query.cursor[0] == "p"
        if backward:
            page.reverse()

        def sort_values(row: Any) -> tuple[Any, ...]:
            return tuple(row._mapping[f"sort_{i}"] for i in range(len(kinds)))

        # The page found its ids through indexes alone; only the page's own rows are read.
        found = {m.id: m for m in await self._current_many({(query.resource_type, row.id) for row in page}, len(page))}
        return SearchPage(
            matches=[found[row.id] for row in page if row.id in found],
            total=total,
            has_next=more if not backward else True,
            has_previous=query.cursor is not None and (more if backward else True),
            first_sort_values=sort_values(page[0]) if page else (),
            last_sort_values=sort_values(page[-1]) if page else (),
        )

    async def _estimate(self, query: SearchQuery) -> int:
        """PostgreSQL's planner estimate of the matches (as Medplum gives for `_total=estimate`),
        counted exactly when small; SQLite has no estimates, so it counts."""
        if self.connection.dialect.name == "postgresql":
            compiled = match_statement(query).compile(dialect=self.connection.dialect)
            arguments = tuple(compiled.params[name] for name in compiled.positiontup or ())  # still bound, never inlined
            plan = (await self.connection.exec_driver_sql("EXPLAIN (FORMAT JSON) " + str(compiled), arguments)).scalar_one()
            plan = orjson.loads(plan) if isinstance(plan, str | bytes) else plan
            estimate = int(plan[0]["Plan"]["Plan Rows"])
            if estimate > _EXACT_BELOW:
                return estimate
        return int((await self.connection.execute(count_statement(query))).scalar_one())

    async def included(self, includes: Sequence[Include], matches: Sequence[StoredVersion], limit: int) -> list[StoredVersion]:
        """Resources `_include`d and `_revinclude`d by the matches; `:iterate` ones once more on those."""
        await self.flush()
        seen = {(m.type, m.id) for m in matches}
        found: list[StoredVersion] = []
        level = list(matches)
        for iteration in range(2):
            wanted: set[tuple[str, str]] = set()
            for include in includes:
                if iteration == 1 and not include.iterate:
                    continue
                wanted |= await self._include_targets(include, level)
            level = [r for r in await self._current_many(wanted - seen, limit - len(found)) if not r.deleted]
            seen |= {(r.type, r.id) for r in level}
            found += level
            if not level or len(found) >= limit:
                break
        return found

    async def _include_targets(self, include: Include, sources: Sequence[StoredVersion]) -> set[tuple[str, str]]:
        if include.reverse:
            targets: set[tuple[str, str]] = set()
            for target_type in {s.type for s in sources}:
                ids = [s.id for s in sources if s.type == target_type]
                rows = (await self.connection.execute(reverse_include_statement(include, target_type, ids))).all()
                targets |= {(row[0], row[1]) for row in rows}
            return targets
        ids = [s.id for s in sources if s.type == include.source_type]
        if not ids:
            return set()
        rows = (await self.connection.execute(forward_include_statement(include, ids))).all()
        return {(row[0], row[1]) for row in rows if row[1] is not None}

    async def _current_many(self, keys: set[tuple[str, str]], limit: int) -> list[StoredVersion]:
        found: list[StoredVersion] = []
        by_type: dict[str, list[str]] = {}
        for resource_type, resource_id in sorted(keys):
            by_type.setdefault(resource_type, []).append(resource_id)
        for resource_type, ids in by_type.items():
            if len(found) >= limit:
                break
            rows = (
                await self.connection.execute(
                    select(resource)
                    .where(resource.c.type == resource_type, resource.c.id.in_(ids[: limit - len(found)]))
                    .order_by(resource.c.id)
                )
            ).all()
            found += [_stored(row._mapping) for row in rows]
        return found

    async def first_with_token(self, resource_type: str, param: str, tokens: Sequence[tuple[str, str]]) -> str | None:
        """The smallest id of a `resource_type` indexed under `param` with any of the (system, code)
        tokens: one index probe where a search would cost a query plan, for look-ups by identifier."""
        if not tokens:
            return None
        await self.flush()
        statement = (
            select(token_index.c.id)
            .where(
                token_index.c.type == resource_type,
                token_index.c.param == param,
                or_(*(and_(token_index.c.system == system, token_index.c.code == code) for system, code in tokens)),
            )
            .order_by(token_index.c.id)
            .limit(1)
        )
        found = (await self.connection.execute(statement)).scalar()
        return str(found) if found is not None else None

    async def lock(self, key: str) -> None:
        """Serialise writers that decide on the same key (conditional create); SQLite already does."""
        await self.flush()
        if self.connection.dialect.name == "postgresql":
            await self.connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})

    async def apply(self, write: Write) -> None:
        """Apply one write; a stale `expected_version` or an id taken meanwhile is a 409 conflict."""
        if not self.writable:
            raise RuntimeError("apply() needs a write transaction")
        self.connection.info.setdefault(_TYPES_WRITTEN, set()).add(write.type)
        if isinstance(write, Create):
            self.pending.append(write)
            if len(self.pending) >= _CREATE_BATCH:
                await self.flush()
            return
        await self.flush()
        if isinstance(write, Update):
            await self._update(write)
        else:
            await self._delete(write)

    async def flush(self) -> None:
        """Write the buffered creates: the resource rows, their first versions and their index rows."""
        if not self.pending:
            return
        creates, self.pending = self.pending, []
        if self.recording is not None:  # only on SQLite
            self.recording.hold(HeldInserts(sqlite_rows(self.connection.dialect, _new_rows(creates))))
            return
        try:
            await _insert_creates(self.connection, creates)
        except IntegrityError:  # on PostgreSQL the transaction is lost either way: the error ends it
            raise _taken(creates) from None

    async def _update(self, write: Update) -> None:
        new_version = write.expected_version + 1
        if write.expected_version == 0:  # create-on-update: written at once, so a taken id is this write's 409
            self.pending.append(Create(write.type, write.id, write.content, write.last_updated, write.index))
            await self.flush()
            return
        result = await self.connection.execute(
            update(resource)
            .where(resource.c.type == write.type, resource.c.id == write.id, resource.c.version == write.expected_version)
            .values(version=new_version, last_updated=write.last_updated, deleted=False, content=write.content)
        )
        if result.rowcount != 1:
            raise _changed_meanwhile(write.type, write.id)
        await self._record(write.type, write.id, new_version, write.last_updated, write.method, write.content)
        await self._unindex(write.type, write.id)
        await _insert_index(self.connection, [(write.type, write.id, write.index)])

    async def _delete(self, write: Delete) -> None:
        new_version = write.expected_version + 1
        result = await self.connection.execute(
            update(resource)
            .where(
                resource.c.type == write.type,
                resource.c.id == write.id,
                resource.c.version == write.expected_version,
                resource.c.deleted == false(),
            )
            .values(version=new_version, last_updated=write.last_updated, deleted=True, content=None)
        )
        if result.rowcount != 1:
            raise _changed_meanwhile(write.type, write.id)
        await self._record(write.type, write.id, new_version, write.last_updated, "DELETE", None)
        await self._unindex(write.type, write.id)

    async def _record(
        self, resource_type: str, resource_id: str, version: int, last_updated: datetime, method: str, content: bytes | None
    ) -> None:
        try:
            await self.connection.execute(
                insert(resource_version).values(
                    type=resource_type,
                    id=resource_id,
                    version=version,
                    last_updated=last_updated,
                    method=method,
                    content=content,
                )
            )
        except IntegrityError:
            raise _changed_meanwhile(resource_type, resource_id) from None

    async def _unindex(self, resource_type: str, resource_id: str) -> None:
        for table in INDEX_TABLES.values():
            await self.connection.execute(delete(table).where(table.c.type == resource_type, table.c.id == resource_id))


async def _insert_creates(connection: AsyncConnection, creates: Sequence[Create]) -> None:
    if connection.dialect.name == "sqlite":
        # Multi-row INSERTs on the driver: SQLAlchemy's per-row parameter handling cost more than
        # the inserts themselves, inside the transaction that holds SQLite's write lock.
        await insert_rows(connection, _new_rows(creates))
        return
    await connection.execute(
        insert(resource),
        [{"type": c.type, "id": c.id, "version": 1, "last_updated": c.last_updated, "deleted": False, "content": c.content} for c in creates],
    )
    await connection.execute(
        insert(resource_version),
        [{"type": c.type, "id": c.id, "version": 1, "last_updated": c.last_updated, "method": "POST", "content": c.content} for c in creates],
    )
    await _insert_index(connection, [(c.type, c.id, c.index) for c in creates])


async def _insert_index(connection: AsyncConnection, indexed: Sequence[tuple[str, str, IndexEntries]]) -> None:
    for table in INDEX_TABLES.values():
        rows = _index_rows(table, indexed)
        if rows:
            names = [c.name for c in table.columns]
            await connection.execute(insert(table), [dict(zip(names, row, strict=True)) for row in rows])


def _new_rows(creates: Sequence[Create]) -> TableRows:
    """The rows of new resources: current version, first history entry, index entries."""
    indexed = [(c.type, c.id, c.index) for c in creates]
    return [
        (resource, [(c.type, c.id, 1, c.last_updated, False, c.content) for c in creates]),
        (resource_version, [(c.type, c.id, 1, c.last_updated, "POST", c.content) for c in creates]),
        *((table, _index_rows(table, indexed)) for table in INDEX_TABLES.values()),
    ]


def _taken(creates: Sequence[Create]) -> FhirError:
    taken = creates[0] if len(creates) == 1 else None
    return FhirError(ErrorCategory.CONFLICT, f"{taken.type}/{taken.id} already exists" if taken else "A resource being created already exists")


def _index_rows(table: Table, indexed: Sequence[tuple[str, str, IndexEntries]]) -> list[tuple[Any, ...]]:
    """The rows of one index table for the resources, in its column order: type, id, the entry's
    values, and where the table sorts, the flags of the rows a sort by each parameter uses."""
    name = next(key for key, candidate in INDEX_TABLES.items() if candidate is table)
    sorts = SORT_COLUMNS.get(table.name)
    if sorts is None:
        return [(resource_type, resource_id, *row) for resource_type, resource_id, entries in indexed for row in getattr(entries, name)]
    values = [c.name for c in table.columns if not c.name.startswith("sort_")][2:]  # after type and id
    ascending, descending = values.index(sorts[0]), values.index(sorts[1])
    rows: list[tuple[Any, ...]] = []
    for resource_type, resource_id, entries in indexed:
        own = getattr(entries, name)
        first, last = _sort_rows(own, ascending, descending)
        rows += [(resource_type, resource_id, *row, i in first, i in last) for i, row in enumerate(own)]
    return rows


def _sort_rows(rows: Sequence[tuple[Any, ...]], ascending: int, descending: int) -> tuple[set[int], set[int]]:
    """Per parameter, the row with the lowest ascending and the one with the highest descending
    value (the first of equals); a parameter whose values are all null has neither."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, row in enumerate(rows):
        param = row[0]
        if row[ascending] is not None and (param not in first or row[ascending] < rows[first[param]][ascending]):
            first[param] = i
        if row[descending] is not None and (param not in last or row[descending] > rows[last[param]][descending]):
            last[param] = i
    return set(first.values()), set(last.values())


def _changed_meanwhile(resource_type: str, resource_id: str) -> FhirError:
    return FhirError(ErrorCategory.CONFLICT, f"{resource_type}/{resource_id} was changed by another request; retry")


def _stored(row: Any) -> StoredVersion:
    return StoredVersion(
        type=row["type"],
        id=row["id"],
        version=row["version"],
        last_updated=row["last_updated"],
        deleted=row.get("deleted", row.get("content") is None),
        content=row["content"],
        method=row.get("method", ""),
    )


class Store:
    """Opens sessions on the engine: plain ones for reads, one transaction per write unit."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        path = sqlite_file(engine)
        # On a SQLite file writers have a connection of their own (the turn serialises them anyway):
        # a writer holding the turn never waits for a reader to give a connection back, as it could
        # when 50 clients' reads had taken the whole pool.
        self.writes = create_engine(engine.url.render_as_string(hide_password=False), connections=1) if path is not None else engine
        # SQLite has one writer at a time; queueing this process's transactions here (first come,
        # first served) replaces its busy-handler polling, whose unfairness left some writes waiting
        # for seconds under load. The bulk writer's thread (creates, audit events) and checkpoints
        # queue on the file lock only.
        self._sqlite_writer = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        self._bulk = SqliteWriter(path) if path is not None else None
        # Checkpoints on a thread and connection of their own: one outside the writer turn must
        # never make a bulk write wait for it.
        self._checkpointer = SqliteWriter(path) if path is not None else None
        self._checkpointing: asyncio.Task[None] | None = None
        self._checkpointed_at = 0.0
        self._replays = Replays(self._replaying)
        # Other processes on the same file (more workers, their audit writers) queue with this one's turns.
        self._process_lock = ProcessLock(path) if path is not None else None

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[StoreSession]:
        async with self.engine.connect() as connection:
            yield StoreSession(connection)

    @asynccontextmanager
    async def writing(self) -> AsyncIterator[StoreSession]:
        """One database transaction: committed when the block ends, rolled back on any exception."""
        async with self.writer_turn(), self.writes.connect() as connection:
            connection = await connection.execution_options(**{WRITE: True})
            async with connection.begin():
                session = StoreSession(connection, writable=True)
                yield session
                await session.flush()
        self._checkpoint_soon()

    async def rehearsed(self, work: Callable[[StoreSession], Awaitable[T]]) -> T:
        """`work`'s result, as if it ran in one write transaction. On a SQLite file it is rehearsed
        first, without the write lock (see rehearsal.py), and replayed if nothing it read changed,
        with the replays of other requests in one transaction; the lock is then held only while
        their reads are checked and their writes made. Work that read nothing and only created
        (a create with a server-assigned id) is not replayed: the bulk writer inserts its rows."""
        recording = await self._rehearse(work) if self._bulk is not None else None
        if recording is not None:
            rehearsal, result = recording
            if (rehearsal.inserts_only and await self._inserted(rehearsal)) or await self._replays.replayed(rehearsal):
                return result
        async with self.writing() as session:
            return await work(session)

    @asynccontextmanager
    async def _replaying(self) -> AsyncIterator[AsyncConnection]:
        async with self.writing() as session:
            yield session.connection

    async def _rehearse(self, work: Callable[[StoreSession], Awaitable[T]]) -> tuple[Recording, T] | None:
        async with self.engine.connect() as snapshot:  # its first read begins the snapshot
            rehearsal = Recording(snapshot)
            session = StoreSession(cast(AsyncConnection, rehearsal), writable=True, recording=rehearsal)
            try:
                result = await work(session)
                await session.flush()
            except Exception:  # refused, or it cannot be rehearsed: its run in the transaction decides
                return None
        return rehearsal, result

    async def _inserted(self, rehearsal: Recording) -> bool:
        """Whether the inserts of a rehearsal that only inserts were written by the bulk writer, in one
        transaction with others queued meanwhile. False: nothing was (an id taken meanwhile, or the
        store cannot write now); its replay in a transaction tells which."""
        assert self._bulk is not None
        rows = [rows for write in rehearsal.writes if isinstance(write, HeldInserts) for rows in write.rows]
        if rows:
            try:
                await self._bulk.insert(rows)
            except DatabaseError:
                return False
            # What a replay would have merged into the connection's info: only what it wrote (work
            # that marks more, such as the outbox, also updates, so it is never inserts only).
            _committed(self.writes, rehearsal.info.get(_TYPES_WRITTEN, set()))
            self._checkpoint_soon()
        return True

    def _checkpoint_soon(self) -> None:
        """On a SQLite file, copy the WAL into the database on a thread, at most every 0.25 s. The
        engine's connections do not (see engine.py): at the commit that crossed 1,000 pages, on the
        event loop, a checkpoint stalled every request ~11 ms, every tenth referral message. Here
        only writers wait for it."""
        if self._bulk is None or (self._checkpointing is not None and not self._checkpointing.done()):
            return
        now = time.monotonic()
        if now - self._checkpointed_at >= _CHECKPOINT_SECONDS:
            self._checkpointed_at = now
            self._checkpointing = asyncio.create_task(self._checkpoint())

    async def _checkpoint(self) -> None:
        assert self._checkpointer is not None
        # Most of the WAL is copied while others write: a checkpoint in the writer turn held it
        # ~9 ms at p50 and ~35 ms at p90 under the mixed load, every write waiting behind it.
        await self._checkpointer.checkpoint()
        # The little appended meanwhile is copied in the writer turn, where nothing is appended:
        # only a WAL copied to its end is started again from the beginning; else it grows without end.
        await self._checkpointer.checkpoint(in_turn=True)

    async def insert_new(self, creates: Sequence[Create]) -> None:
        """Write creates of ids nobody else can hold (server-generated, never updated) in bulk, in a
        transaction of their own: much cheaper per row than `apply`, and on SQLite written in one go,
        so the writer's turn lasts as long as the write itself. `on_commit_of` does not see them."""
        tables = _new_rows(creates)
        if self._bulk is None:
            async with self.writing() as session:
                await insert_rows(session.connection, tables)
            return
        await self._bulk.insert(sqlite_rows(self.engine.dialect, tables))

    @asynccontextmanager
    async def writer_turn(self) -> AsyncIterator[None]:
        """This process's turn to write a transaction to SQLite (no-op on PostgreSQL); given up after
        SQLite's own busy timeout, so a write waiting on another in the same task fails instead of
        hanging."""
        if self._sqlite_writer is None:
            yield
            return
        async with AsyncExitStack() as turn:
            async with asyncio.timeout(_SQLITE_BUSY_SECONDS):
                await self._sqlite_writer.acquire()
                turn.callback(self._sqlite_writer.release)
                if self._process_lock is not None:
                    await turn.enter_async_context(self._process_lock.held())
            yield

    async def close(self) -> None:
        if self._checkpointing is not None:
            await self._checkpointing
        for writer in (self._bulk, self._checkpointer):
            if writer is not None:
                await writer.close()
        if self.writes is not self.engine:
            await self.writes.dispose()
        await self.engine.dispose()

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(select(1))


def on_commit_of(engine: AsyncEngine, resource_types: Collection[str], callback: Callable[[], None]) -> None:
    """Call `callback` each time a transaction that wrote (created, updated or deleted) a resource of
    one of `resource_types` has committed; a rollback forgets what it wrote."""
    watchers = _watchers.get(engine.sync_engine)
    if watchers is None:
        watchers = _watchers[engine.sync_engine] = []
        _watch(engine)
    watchers.append((frozenset(resource_types), callback))


# Per engine, the resource types each `on_commit_of` callback watches.
_watchers: WeakKeyDictionary[Engine, list[tuple[frozenset[str], Callable[[], None]]]] = WeakKeyDictionary()


def _committed(engine: AsyncEngine, resource_types: set[str]) -> None:
    for watched, callback in _watchers.get(engine.sync_engine, ()):
        if watched & resource_types:
            callback()


def _watch(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "rollback")
    def _rolled_back(connection: Any) -> None:
        if not connection.invalidated:  # reading `info` of a lost connection would raise over the real error
            connection.info.pop(_TYPES_WRITTEN, None)

    # The connection's return to the pool comes after its commit; the `commit` event fires before it.
    @event.listens_for(engine.sync_engine, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        _committed(engine, record.info.pop(_TYPES_WRITTEN, set()))
