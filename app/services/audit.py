"""The audit trail: AuditEvents for every request that touched patient data, stored as FHIR resources
(so `AuditEvent?patient=…&agent=…&date=…` works like any search).

Group commit: a request's answer waits until its AuditEvents are committed, so no patient data
leaves the server unrecorded; every request waiting at the same moment shares one transaction, so
the cost stays a small share of the request. The events bypass validation and write hooks (the
server builds them); the API refuses to change them (see `permissions.refuse_immutable`).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import orjson

from app.fhir.models import RESOURCE_TYPES, is_valid_id
from app.security.audit import AuditRecord, Touched, audit_events
from app.security.compartment import patients_of
from app.services.context import FhirContext
from app.services.stored import format_instant, versioned
from app.storage.repository import Create, StoreSession

__all__ = ["AuditTrail"]


class AuditTrail:
    def __init__(self, context: FhirContext) -> None:
        self._context = context
        self._queue: list[tuple[list[Create], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, record: AuditRecord) -> None:
        """Store the AuditEvents of one request; returns once they are committed."""
        if any(t.patients is None for t in record.touched):
            record = replace(record, touched=await self._with_patients(record.touched))
        now = self._context.clock()
        events = audit_events(record, format_instant(now), self._context.new_id)
        if not events:
            return
        writes = []
        for event in events:
            content, index = versioned(self._context, event, event["id"], 1, now)
            writes.append(Create("AuditEvent", event["id"], content, now, index))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((writes, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._drain())
        await done

    async def close(self) -> None:
        """Wait for the events already queued (at shutdown)."""
        if self._writer is not None:
            await self._writer

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    async with self._context.store.writing() as session:
                        for writes, _ in batch:
                            for write in writes:
                                await session.apply(write)
                except Exception as error:  # whatever failed, every waiting request must fail with it
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(error)
                else:
                    for _, done in batch:
                        if not done.done():
                            done.set_result(None)
        finally:
            self._writer = None

    async def _with_patients(self, touched: tuple[Touched, ...]) -> tuple[Touched, ...]:
        """Patients of the touched resources that came without content (deletes, minimal answers, failures)."""
        async with self._context.store.reading() as session:
            return tuple([t if t.patients is not None else replace(t, patients=await self._patients(session, t)) for t in touched])

    async def _patients(self, session: StoreSession, touched: Touched) -> frozenset[str]:
        if touched.type not in RESOURCE_TYPES or not is_valid_id(touched.id):
            return frozenset()
        if touched.version is not None and touched.version.isdigit():
            stored = await session.version(touched.type, touched.id, int(touched.version))
        else:
            stored = await session.current(touched.type, touched.id)
        if stored is not None and stored.content is None and stored.version > 1:  # a deletion: whose was it?
            stored = await session.version(touched.type, touched.id, stored.version - 1)
        if stored is None or stored.content is None:
            return frozenset()
        return patients_of(self._context.search_parameters, orjson.loads(stored.content))
