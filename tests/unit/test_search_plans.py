"""How SQLite runs a search next to a reference: a code criterion beside `subject` is checked on the
subject's few candidates, not materialised as the id list of every resource with the code (which
cost each `$apply` 1.5 ms at 7,000 score Observations, and grew with the store); and the matches
are the same either way."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy.dialects import sqlite

from app.fhir.index import index_resource
from app.fhir.search_params import official_search_parameters
from app.fhir.search_query import SearchQuery, parse_search
from app.services.context import search_registry
from app.storage.engine import create_engine
from app.storage.migrate import upgrade
from app.storage.repository import Create, Store
from app.storage.search_sql import page_statements

_REGISTRY = search_registry(official_search_parameters())
_SCORES = "http://loinc.org|91351-7,http://loinc.org|91352-5"


def _observation(resource_id: str, patient: str, code: str) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": resource_id,
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
    }


def _query(params: list[tuple[str, str]]) -> SearchQuery:
    return parse_search("Observation", params, _REGISTRY, default_count=20, max_count=1000)


async def test_a_code_beside_a_subject_is_probed_per_candidate_and_finds_the_same(tmp_path: Path) -> None:
    store = Store(create_engine(f"sqlite+aiosqlite:///{tmp_path / 'plans.db'}"))
    await upgrade(store.engine)
    try:
        observations = [
            _observation("a1", "a", "91351-7"),
            _observation("a2", "a", "91352-5"),
            _observation("a3", "a", "8867-4"),  # heart rate: not a score
            _observation("b1", "b", "91351-7"),
        ]
        async with store.writing() as session:
            for o in observations:
                await session.apply(Create("Observation", str(o["id"]), b"{}", datetime(2026, 12, 1), index_resource(_REGISTRY, o)))
        both = _query([("subject", "Patient/a"), ("code", _SCORES)])
        (statement,), _ = page_statements(both)
        async with store.reading() as session:
            compiled = statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
            plan = " | ".join(row[-1] for row in (await session.connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")).all())
            assert "CORRELATED" in plan and "ix_token_index_resource" in plan, plan
            assert sorted(m.id for m in (await session.search(both)).matches) == ["a1", "a2"]
            codes_only = _query([("code", _SCORES)])  # no reference: the code's own id list, as before
            assert sorted(m.id for m in (await session.search(codes_only)).matches) == ["a1", "a2", "b1"]
            (alone,), _ = page_statements(codes_only)
            compiled = alone.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
            plan = " | ".join(row[-1] for row in (await session.connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")).all())
            assert "CORRELATED" not in plan, plan
    finally:
        await store.close()
