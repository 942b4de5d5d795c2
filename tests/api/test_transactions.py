"""Batch and transaction Bundles at POST /: ordering, reference rewriting, atomicity."""

from __future__ import annotations

from typing import Any

import httpx

from tests.factories import FHIR_JSON, observation, patient, unique


def _transaction(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _post(resource: dict[str, Any], full_url: str | None = None, **request: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"], **request}}
    if full_url:
        entry["fullUrl"] = full_url
    return entry


async def _count(client: httpx.AsyncClient, system: str, value: str, resource_type: str = "Patient") -> int:
    response = await client.get(f"/{resource_type}", params={"identifier": f"{system}|{value}", "_summary": "count"})
    return int(response.json()["total"])


async def test_transaction_rewrites_urn_uuid_references_to_new_ids(client: httpx.AsyncClient) -> None:
    patient_url = "urn:uuid:0b6f4c1e-52a4-4b0e-9d57-9b1f1d3c1a01"
    bundle = _transaction(
        _post(observation(patient_url), "urn:uuid:0b6f4c1e-52a4-4b0e-9d57-9b1f1d3c1a02"),
        _post(patient(), patient_url),
    )
    response = await client.post("/", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "transaction-response"
    assert [e["response"]["status"] for e in result["entry"]] == ["201 Created", "201 Created"]
    observation_location, patient_location = (e["response"]["location"] for e in result["entry"])
    patient_ref = "/".join(patient_location.split("/")[:2])
    stored = (await client.get("/" + "/".join(observation_location.split("/")[:2]))).json()
    assert stored["subject"]["reference"] == patient_ref
    assert (await client.get(f"/{patient_ref}")).status_code == 200
    assert all(e["response"]["etag"] == 'W/"1"' and "lastModified" in e["response"] for e in result["entry"])


async def test_transaction_is_all_or_nothing(client: httpx.AsyncClient) -> None:
    value = unique("atomic")
    bundle = _transaction(
        _post(patient(identifier=[{"system": "urn:atomic", "value": value}])),
        _post({"resourceType": "Patient", "birthDate": "not-a-date"}),
    )
    response = await client.post("/", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 422
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.json()["issue"][0]["expression"]
    assert await _count(client, "urn:atomic", value) == 0


async def test_transaction_processes_deletes_before_creates_and_reads_last(client: httpx.AsyncClient) -> None:
    doomed = (await client.post("/Patient", json=patient(), headers=FHIR_JSON)).json()
    kept_id = unique("kept")
    bundle = _transaction(
        {"request": {"method": "GET", "url": f"Patient/{kept_id}"}},
        {"resource": {**patient(), "id": kept_id}, "request": {"method": "PUT", "url": f"Patient/{kept_id}"}},
        {"request": {"method": "DELETE", "url": f"Patient/{doomed['id']}"}},
    )
    response = await client.post("/", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["200 OK", "201 Created", "204 No Content"]
    assert response.json()["entry"][0]["resource"]["id"] == kept_id  # the GET ran after the PUT
    assert (await client.get(f"/Patient/{doomed['id']}")).status_code == 410


async def test_transaction_resolves_conditional_references(client: httpx.AsyncClient) -> None:
    value = unique("mrn")
    existing = (await client.post("/Patient", json=patient(identifier=[{"system": "urn:mrn", "value": value}]), headers=FHIR_JSON)).json()
    bundle = _transaction(_post(observation(f"Patient?identifier=urn:mrn|{value}")))
    response = await client.post("/", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    location = response.json()["entry"][0]["response"]["location"]
    stored = (await client.get("/" + "/".join(location.split("/")[:2]))).json()
    assert stored["subject"]["reference"] == f"Patient/{existing['id']}"


async def test_transaction_with_unresolvable_conditional_reference_fails_whole(client: httpx.AsyncClient) -> None:
    value = unique("atomic")
    bundle = _transaction(
        _post(patient(identifier=[{"system": "urn:atomic", "value": value}])),
        _post(observation(f"Patient?identifier=urn:nobody|{unique()}")),
    )
    response = await client.post("/", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 412
    assert await _count(client, "urn:atomic", value) == 0


async def test_transaction_conditional_create_reuses_the_match_for_references(client: httpx.AsyncClient) -> None:
    value = unique("mrn")
    existing = (await client.post("/Patient", json=patient(identifier=[{"system": "urn:mrn", "value": value}]), headers=FHIR_JSON)).json()
    patient_url = "urn:uuid:7d1f9a8e-1111-4c3a-8f00-000000000001"
    bundle = _transaction(
        _post(patient(identifier=[{"system": "urn:mrn", "value": value}]), patient_url, ifNoneExist=f"identifier=urn:mrn|{value}"),
        _post(observation(patient_url)),
    )
    response = await client.post("/", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    first, second = response.json()["entry"]
    assert first["response"]["status"] == "200 OK"
    location = second["response"]["location"]
    stored = (await client.get("/" + "/".join(location.split("/")[:2]))).json()
    assert stored["subject"]["reference"] == f"Patient/{existing['id']}"


async def test_transaction_patch_entry_uses_a_binary_json_patch(client: httpx.AsyncClient) -> None:
    import base64

    created = (await client.post("/Patient", json=patient(), headers=FHIR_JSON)).json()
    data = base64.b64encode(b'[{"op":"replace","path":"/birthDate","value":"1999-09-09"}]').decode()
    bundle = _transaction(
        {
            "resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": data},
            "request": {"method": "PATCH", "url": f"Patient/{created['id']}"},
        }
    )
    response = await client.post("/", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200, response.text
    assert (await client.get(f"/Patient/{created['id']}")).json()["birthDate"] == "1999-09-09"


async def test_batch_reports_each_entry_and_keeps_the_good_ones(client: httpx.AsyncClient) -> None:
    value = unique("batch")
    bundle = _transaction(
        _post(patient(identifier=[{"system": "urn:batch", "value": value}])),
        _post({"resourceType": "Patient", "birthDate": "nope"}),
        {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
        kind="batch",
    )
    response = await client.post("/", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 200
    entries = response.json()["entry"]
    assert response.json()["type"] == "batch-response"
    assert entries[0]["response"]["status"] == "201 Created"
    assert entries[1]["response"]["status"].startswith("422")
    assert entries[1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert entries[2]["response"]["status"].startswith("404")
    assert await _count(client, "urn:batch", value) == 1


async def test_transaction_with_stale_if_match_fails_with_412(client: httpx.AsyncClient) -> None:
    created = (await client.post("/Patient", json=patient(), headers=FHIR_JSON)).json()
    await client.put(f"/Patient/{created['id']}", json={**created, "active": True}, headers=FHIR_JSON)
    bundle = _transaction(
        {"resource": created, "request": {"method": "PUT", "url": f"Patient/{created['id']}", "ifMatch": 'W/"1"'}}
    )
    response = await client.post("/", json=bundle, headers=FHIR_JSON)
    assert response.status_code == 412


async def test_transaction_with_return_representation_carries_resources(client: httpx.AsyncClient) -> None:
    response = await client.post("/", json=_transaction(_post(patient())), headers={**FHIR_JSON, "Prefer": "return=representation"})
    assert response.json()["entry"][0]["resource"]["resourceType"] == "Patient"
    minimal = await client.post("/", json=_transaction(_post(patient())), headers={**FHIR_JSON, "Prefer": "return=minimal"})
    assert "resource" not in minimal.json()["entry"][0]
