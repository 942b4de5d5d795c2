"""Schemathesis against `openapi/openapi.json`, on a real server (development mode, audit trail on):
a fixed seed and a bounded number of examples per operation. No answer may be a 5xx or break its
own schema, and a rejected request leaves the store as it was.

Generated path parameters rarely name a real resource type, so each case is also sent with a real
type and id in place of the generated ones, to reach the interaction code and not only the 404s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, seed, settings
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests import servers
from tests.factories import FHIR_JSON, observation, patient

SCHEMA = schemathesis.openapi.from_path(servers.ROOT / "openapi" / "openapi.json")
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
REAL_TYPES = ("Patient", "Observation", "AuditEvent", "Bundle")


class FuzzTarget:
    def __init__(self, base: str, database_url: str, patient_id: str) -> None:
        self.base = base
        self.database_url = database_url
        self.patient_id = patient_id
        self.session = requests.Session()

    def fingerprint(self) -> tuple[int, int]:
        """(versions, last change) of everything but the audit trail, which records rejected requests too."""

        async def read() -> tuple[int, int]:
            engine = create_async_engine(self.database_url, poolclass=NullPool)
            try:
                async with engine.connect() as connection:
                    row = (
                        await connection.execute(
                            text("SELECT count(*), coalesce(max(seq), 0) FROM resource_version WHERE type <> 'AuditEvent'")
                        )
                    ).one()
                    return int(row[0]), int(row[1])
            finally:
                await engine.dispose()

        return asyncio.run(read())


@pytest.fixture(scope="module")
def fuzz_target(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    folder: Path = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite+aiosqlite:///{folder / 'fuzz.db'}" if database_url.startswith("sqlite") else database_url
    server = servers.start({"DATABASE_URL": url, "BACKPATH_DEV_MODE": "1", "BACKPATH_LOG_LEVEL": "WARNING"}, folder / "fuzz.log")
    try:
        created = httpx.post(f"{server.url}/Patient", json=patient("Fuzz"), headers=FHIR_JSON).json()
        httpx.post(f"{server.url}/Observation", json=observation(f"Patient/{created['id']}"), headers=FHIR_JSON)
        yield FuzzTarget(server.url, url, created["id"])
    finally:
        server.stop()


def _send(case: schemathesis.Case, target: FuzzTarget) -> None:
    before = target.fingerprint()
    response = case.call(base_url=target.base, session=target.session, timeout=30)
    case.validate_response(response, checks=CHECKS)
    if response.status_code >= 400:
        assert target.fingerprint() == before, f"{case.method} {case.formatted_path} was rejected ({response.status_code}) but changed the store"


@SCHEMA.parametrize()
@seed(20261201)
@settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_the_api_survives_generated_requests(case: schemathesis.Case, fuzz_target: FuzzTarget) -> None:
    _send(case, fuzz_target)
    parameters = case.path_parameters or {}
    if "resource_type" in parameters:
        parameters["resource_type"] = REAL_TYPES[len(str(parameters.get("resource_id", ""))) % len(REAL_TYPES)]
        if "resource_id" in parameters:
            parameters["resource_id"] = fuzz_target.patient_id
        _send(case, fuzz_target)
