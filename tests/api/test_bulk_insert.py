"""The store's bulk insert (the audit trail's path): all of a batch or none of it, on SQLite and
PostgreSQL alike, and a refusal is told apart from an outage."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from app.fhir.index import IndexEntries
from app.storage.repository import Create
from app.storage.schema import resource, resource_version, token_index
from tests.factories import unique


def _create(resource_id: str) -> Create:
    body = {"resourceType": "Basic", "id": resource_id, "code": {"text": "bulk"}}
    index = IndexEntries(tokens=[("code", None, "bulk", None)])
    return Create("Basic", resource_id, orjson.dumps(body), datetime(2026, 3, 2, 9, 30, 0), index)


async def _count(app: Any, table: Any, resource_id: str) -> int:
    async with app.state.fhir.store.reading() as session:
        return int((await session.connection.execute(select(func.count()).select_from(table).where(table.c.id == resource_id))).scalar_one())


async def test_a_batch_that_fails_partway_leaves_nothing_behind(app: Any) -> None:
    store = app.state.fhir.store
    first, again = unique("bulk"), unique("bulk")
    await store.insert_new([_create(first)])
    # Its current row gone, its first version still there: a new batch with it gets past the
    # resource table and fails on the version table.
    async with store.writing() as session:
        await session.connection.execute(delete(resource).where(resource.c.type == "Basic", resource.c.id == first))
    with pytest.raises(IntegrityError):
        await store.insert_new([_create(again), _create(first)])
    for table in (resource, resource_version, token_index):
        assert await _count(app, table, again) == 0, table.name
    assert await _count(app, resource, first) == 0
    await store.insert_new([_create(again)])
    assert [await _count(app, t, again) for t in (resource, resource_version, token_index)] == [1, 1, 1]
