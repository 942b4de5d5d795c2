"""Content folders: resources loaded at start-up, and our own SearchParameters made searchable."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from app.config import Settings
from app.content.loader import ContentError
from app.main import create_app
from tests.factories import FHIR_JSON, patient, unique


async def test_a_search_parameter_in_the_content_folder_is_searchable_after_a_restart(settings: Settings, tmp_path: Path) -> None:
    code = unique("sp").replace("-", "")
    definition = {
        "resourceType": "SearchParameter",
        "id": f"patient-{code}",
        "url": f"http://backpath.dev/fhir/SearchParameter/patient-{code}",
        "name": code,
        "status": "active",
        "description": "Marital status, to prove a content SearchParameter needs no code change",
        "code": code,
        "base": ["Patient"],
        "type": "token",
        "expression": "Patient.maritalStatus",
    }
    (tmp_path / "SearchParameter-test.json").write_text(json.dumps(definition))
    married = patient(maritalStatus={"coding": [{"system": "urn:ms", "code": "M"}]})
    app = create_app(replace(settings, content_dirs=(tmp_path,)))
    async with app.router.lifespan_context(app):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
        async with client:
            created = (await client.post("/Patient", json=married, headers=FHIR_JSON)).json()
            found = (await client.get("/Patient", params={code: "urn:ms|M", "_id": created["id"]}, headers={"Prefer": "handling=strict"})).json()
            assert [e["resource"]["id"] for e in found["entry"]] == [created["id"]]
            stored = await client.get(f"/SearchParameter/patient-{code}")
            assert stored.status_code == 200
            statement = (await client.get("/metadata")).json()
            patient_params = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Patient")["searchParam"]
            assert code in {p["name"] for p in patient_params}


async def test_an_invalid_content_file_stops_the_start_up_naming_the_file(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('{"resourceType": "Patient", "id": "x", "birthDate": "never"}')
    app = create_app(replace(settings, content_dirs=(tmp_path,)))
    with pytest.raises(ContentError, match=r"broken\.json"):
        async with app.router.lifespan_context(app):
            pass
