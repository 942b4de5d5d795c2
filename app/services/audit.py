"""The audit trail: AuditEvents for every request that touched patient data, stored as FHIR resources
(so `AuditEvent?patient=…&agent=…&date=…` works like any search).

A request only queues what it did (`AuditRecord`, stamped with the time); the trail hands what was
queued, in batches, to a writer (`AuditWriter`, run by `audit_process.AuditProcess` in a process of
its own), which works out which resources and patients were touched, builds the BALP events and
stores them, so the request's answer does not wait for any of it. Events reach the database within
`FLUSH_SECONDS`; a crash loses at most what was queued in that window. Reading the audit trail
first commits what is queued, so an auditor sees every request answered before theirs. The events
bypass validation and write hooks (the server builds them); the API refuses to change them (see
`permissions.refuse_immutable`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Protocol

import orjson

from app.fhir.models import RESOURCE_TYPES, is_valid_id, stored_number
from app.security.audit import AuditRecord, Touched, audit_events, touched_by
from app.security.compartment import patients_of
from app.services.context import FhirContext, utc_now_ms
from app.services.stored import format_instant, versioned
from app.storage.engine import DatabaseError, RowsRefused
from app.storage.repository import Create, StoreSession

__all__ = ["FLUSH_SECONDS", "AuditTrail", "AuditWriter", "EventWriter", "Queued", "WriterUnavailable"]

log = logging.getLogger("backpath.audit")

FLUSH_SECONDS = 0.25
# Past this many queued records a request waits for the writer: the trail slows the server down
# rather than fall behind without bound.
MAX_QUEUED = 5000


# One request's record, stamped with the time it was queued (the events' `recorded`).
Queued = tuple[AuditRecord, datetime]


class WriterUnavailable(Exception):
    """The writer cannot store events now (its store is down or busy, or its process is gone)."""


class EventWriter(Protocol):
    async def write(self, queued: list[Queued]) -> None:
        """Store the events of `queued`, all or none."""

    async def close(self) -> None: ...


def unavailable(error: Exception) -> bool:
    """The store cannot take writes now (down, locked, or SQLite's writer turn timed out): worth
    retrying, unlike rows the database refuses."""
    if isinstance(error, WriterUnavailable):
        return True
    return isinstance(error, DatabaseError | TimeoutError) and not isinstance(error, RowsRefused)


class AuditTrail:
    """The queue between requests and the writer, with the writer's retry policy."""

    def __init__(self, writer: EventWriter, clock: Callable[[], datetime] = utc_now_ms) -> None:
        self._writer = writer
        self._clock = clock
        self._queued: list[Queued] = []
        self._waiting: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def record(self, record: AuditRecord) -> None:
        """Queue what one request did; its AuditEvents are written shortly after."""
        self._queued.append((record, self._clock()))
        if self._task is None:
            self._task = asyncio.create_task(self._write_forever())
        if len(self._queued) > MAX_QUEUED:
            await self.flush()

    async def flush(self) -> None:
        """Commit everything queued so far (also what the writer is committing right now)."""
        if not self._queued and self._task is None:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(done)
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._write_forever())
        await done

    async def close(self) -> None:
        """Commit what is queued and stop the writer (at shutdown)."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self._writer.close()

    async def _write_forever(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # no flush asked for: write what the interval gathered
                await asyncio.wait_for(self._wake.wait(), FLUSH_SECONDS)
            self._wake.clear()
            await self._write_queued()
            if self._closing:
                return

    async def _write_queued(self) -> None:
        queued, self._queued = self._queued, []
        waiting, self._waiting = self._waiting, []
        try:
            if queued:
                await self._writer.write(queued)
        except Exception as error:
            if unavailable(error):  # the store is down or busy: keep them all for the next round
                self._retry_later(queued, waiting, error)
                return
            kept = await self._write_one_by_one(queued)
            if kept:
                self._retry_later(kept, waiting, error)
                return
        for done in waiting:
            if not done.done():
                done.set_result(None)

    def _retry_later(self, kept: list[Queued], waiting: list[asyncio.Future[None]], error: Exception) -> None:
        log.error("audit events could not be written; retrying", extra={"status": type(error).__name__})
        self._queued[:0] = kept
        for done in waiting:
            if not done.done():
                done.set_exception(error)

    async def _write_one_by_one(self, queued: list[Queued]) -> list[Queued]:
        """After a failed batch: each record alone. A database failure stops the pass and hands this
        record and the rest back to retry (the store is down or busy: nothing is lost); a record that
        fails otherwise (its events cannot be built or stored) is dropped and logged, so one bad
        record cannot stop the trail."""
        for index, item in enumerate(queued):
            try:
                await self._writer.write([item])
            except Exception as error:
                if unavailable(error):
                    return queued[index:]
                # this record's own fault: the others are written
                log.error("an audit record could not be written and was dropped", extra={"request_id": item[0].request_id})
        return []


class AuditWriter:
    """Builds the AuditEvents of queued records and stores them."""

    def __init__(self, context: FhirContext) -> None:
        self._context = context

    async def write(self, queued: list[Queued]) -> None:
        writes = await self._events(queued)
        if writes:
            await self._context.store.insert_new(writes)

    async def close(self) -> None:
        """Nothing to release: the store is its owner's."""

    async def _events(self, queued: list[Queued]) -> list[Create]:
        """The stored form of the AuditEvents of the queued records."""
        writes: list[Create] = []
        for record, recorded in queued:
            record, touched = touched_by(self._context.search_parameters, record)
            if any(t.patients is None for t in touched):
                async with self._context.store.reading() as session:
                    touched = tuple([t if t.patients is not None else replace(t, patients=await self._patients(session, t)) for t in touched])
            for event in audit_events(replace(record, touched=touched), format_instant(recorded), self._context.new_id):
                content, index = versioned(self._context, event, event["id"], 1, recorded)
                writes.append(Create("AuditEvent", event["id"], content, recorded, index))
            await asyncio.sleep(0)  # in a server's own process: let requests run between records
        return writes

    async def _patients(self, session: StoreSession, touched: Touched) -> frozenset[str]:
        """Patients of a touched resource whose content the answer did not carry (a delete, a minimal
        answer, a refusal): from the version named, or the current one; a deletion by what it deleted."""
        if touched.type not in RESOURCE_TYPES or not is_valid_id(touched.id):
            return frozenset()
        version = stored_number(touched.version) if touched.version is not None else None
        if version is not None:
            stored = await session.version(touched.type, touched.id, version)
        else:
            stored = await session.current(touched.type, touched.id)
        if stored is not None and stored.content is None and stored.version > 1:
            stored = await session.version(touched.type, touched.id, stored.version - 1)
        if stored is None or stored.content is None:
            return frozenset()
        return patients_of(self._context.search_parameters, orjson.loads(stored.content))
