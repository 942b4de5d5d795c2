"""The FHIR REST interactions over HTTP: read, vread, create, update, patch, delete, history,
conditional interactions, versions and the headers that go with them."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.factories import FHIR_JSON, patient, unique


async def _create(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_create_assigns_id_version_and_location(client: httpx.AsyncClient) -> None:
    response = await client.post("/Patient", json={**patient(), "id": "client-chosen"}, headers=FHIR_JSON)
    assert response.status_code == 201
    created = response.json()
    assert created["id"] != "client-chosen"
    assert created["meta"]["versionId"] == "1"
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"] == f"http://testserver/Patient/{created['id']}/_history/1"
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert "last-modified" in response.headers


async def test_read_returns_what_was_created(client: httpx.AsyncClient) -> None:
    created = await _create(client, patient(family="Read"))
    response = await client.get(f"/Patient/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created
    assert response.headers["etag"] == 'W/"1"'


async def test_read_of_unknown_resource_is_404_operation_outcome(client: httpx.AsyncClient) -> None:
    response = await client.get("/Patient/does-not-exist")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.json()["issue"][0]["code"] == "not-found"


async def test_read_with_matching_if_none_match_is_304(client: httpx.AsyncClient) -> None:
    created = await _create(client, patient())
    response = await client.get(f"/Patient/{created['id']}", headers={"If-None-Match": 'W/"1"'})
    assert response.status_code == 304


async def test_update_increments_version_and_keeps_history(client: httpx.AsyncClient) -> None:
    created = await _create(client, patient(family="Before"))
    changed = {**created, "name": [{"family": "After"}]}
    response = await client.put(f"/Patient/{created['id']}", json=changed, headers=FHIR_JSON)
    assert response.status_code == 200
    assert response.json()["meta"]["versionId"] == "2"
    assert response.headers["etag"] == 'W/"2"'
    old = await client.get(f"/Patient/{created['id']}/_history/1")
    assert old.status_code == 200 and old.json()["name"][0]["family"] == "Before"
    history = (await client.get(f"/Patient/{created['id']}/_history")).json()
    assert history["type"] == "history" and history["total"] == 2
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]
    assert [e["request"]["method"] for e in history["entry"]] == ["PUT", "POST"]


async def test_update_with_an_identical_body_makes_no_new_version(client: httpx.AsyncClient) -> None:
    created = await _create(client, patient())
    again = await client.put(f"/Patient/{created['id']}", json=created, headers=FHIR_JSON)
    assert again.status_code == 200
    assert again.json()["meta"] == created["meta"]
    assert (await client.get(f"/Patient/{created['id']}/_history")).json()["total"] == 1


async def test_update_creates_a_resource_with_the_client_id(client: httpx.AsyncClient) -> None:
    resource_id = unique("put")
    response = await client.put(f"/Patient/{resource_id}", json={**patient(), "id": resource_id}, headers=FHIR_JSON)
    assert response.status_code == 201
    assert response.headers["location"].endswith(f"/Patient/{resource_id}/_history/1")


async def test_update_with_stale_if_match_is_412_and_changes_nothing(client: httpx.AsyncClient) -> None:
    created = await _create(client, patient())
    url = f"/Patient/{created['id']}"
    ok = await client.put(url, json={**created, "active": True}, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = await client.put(url, json={**created, "active": False}, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.json()["issue"][0]["code"] == "conflict"
    assert (await client.get(url)).json()["meta"]["versionId"] == "2"


async def test_update_with_id_mismatch_is_400(client: httpx.AsyncClient) -> None:
    created = await _create(client, patient())
    response = await client.put(f"/Patient/{created['id']}", json={**created, "id": "other"}, headers=FHIR_JSON)
    assert response.status_code == 400


async def test_concurrent_updates_never_lose_one(client: httpx.AsyncClient) -> None:
    """Twenty writers race on one resource with If-Match: exactly one wins per version."""
    created = await _create(client, patient())
    url = f"/Patient/{created['id']}"

    async def attempt(n: int) -> int:
        body = {**created, "gender": "other", "multipleBirthInteger": n}
        response = await client.put(url, json=body, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
        return response.status_code

    statuses = await asyncio.gather(*(attempt(n) for n in range(20)))
    assert statuses.count(200) == 1
    assert set(statuses) <= {200, 409, 412}
    history = (await client.get(f"{url}/_history")).json()
    assert history["total"] == 2


async def test_concurrent_unconditional_updates_all_land_as_versions(client: httpx.AsyncClient) -> None:
    created = await _create(client, patient())
    url = f"/Patient/{created['id']}"

    async def attempt(n: int) -> int:
        response = await client.put(url, json={**created, "multipleBirthInteger": n}, headers=FHIR_JSON)
        return response.status_code

    statuses = await asyncio.gather(*(attempt(n) for n in range(10)))
    assert set(statuses) <= {200, 409}
    history = (await client.get(f"{url}/_history")).json()
    assert history["total"] == 1 + statuses.count(200)


async def test_patch_applies_json_patch(client: httpx.AsyncClient) -> None:
    created = await _create(client, patient())
    response = await client.patch(
        f"/Patient/{created['id']}",
        content=b'[{"op": "replace", "path": "/birthDate", "value": "1980-02-03"}]',
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert response.status_code == 200
    assert response.json()["birthDate"] == "1980-02-03"
    assert response.json()["meta"]["versionId"] == "2"


async def test_patch_producing_an_invalid_resource_is_422(client: httpx.AsyncClient) -> None:
    created = await _create(client, patient())
    response = await client.patch(
        f"/Patient/{created['id']}",
        content=b'[{"op": "add", "path": "/birthDate", "value": "not-a-date"}]',
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert response.status_code == 422
    assert (await client.get(f"/Patient/{created['id']}")).json()["meta"]["versionId"] == "1"


async def test_delete_then_read_is_410_and_history_shows_the_deletion(client: httpx.AsyncClient) -> None:
    created = await _create(client, patient())
    url = f"/Patient/{created['id']}"
    assert (await client.delete(url)).status_code == 204
    gone = await client.get(url)
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    history = (await client.get(f"{url}/_history")).json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]
    assert (await client.delete(url)).status_code == 204  # idempotent
    assert (await client.get(f"{url}/_history/1")).status_code == 200
    assert (await client.get(f"{url}/_history/2")).status_code == 410


async def test_update_after_delete_revives_the_resource(client: httpx.AsyncClient) -> None:
    created = await _create(client, patient())
    url = f"/Patient/{created['id']}"
    await client.delete(url)
    response = await client.put(url, json=created, headers=FHIR_JSON)
    assert response.status_code == 201  # it did not exist, so the PUT created it (HAPI answers the same)
    assert response.json()["meta"]["versionId"] == "3"


async def test_conditional_create_returns_the_existing_match(client: httpx.AsyncClient) -> None:
    value = unique("mrn")
    body = patient(identifier=[{"system": "urn:mrn", "value": value}])
    headers = {**FHIR_JSON, "If-None-Exist": f"identifier=urn:mrn|{value}"}
    first = await client.post("/Patient", json=body, headers=headers)
    second = await client.post("/Patient", json=body, headers=headers)
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]


async def test_concurrent_conditional_creates_make_one_resource(client: httpx.AsyncClient) -> None:
    value = unique("mrn")
    body = patient(identifier=[{"system": "urn:mrn", "value": value}])
    headers = {**FHIR_JSON, "If-None-Exist": f"identifier=urn:mrn|{value}"}
    responses = await asyncio.gather(*(client.post("/Patient", json=body, headers=headers) for _ in range(8)))
    assert sorted(r.status_code for r in responses) == [200] * 7 + [201]
    found = (await client.get("/Patient", params={"identifier": f"urn:mrn|{value}"})).json()
    assert found["total"] == 1


async def test_conditional_create_with_unknown_criteria_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/Patient", json=patient(), headers={**FHIR_JSON, "If-None-Exist": "nonsense=1"})
    assert response.status_code == 400


async def test_conditional_update_updates_the_match_or_creates(client: httpx.AsyncClient) -> None:
    value = unique("mrn")
    body = patient(identifier=[{"system": "urn:mrn", "value": value}])
    created = await client.put(f"/Patient?identifier=urn:mrn|{value}", json=body, headers=FHIR_JSON)
    assert created.status_code == 201
    updated = await client.put(f"/Patient?identifier=urn:mrn|{value}", json={**body, "active": True}, headers=FHIR_JSON)
    assert updated.status_code == 200
    assert updated.json()["id"] == created.json()["id"]
    assert updated.json()["meta"]["versionId"] == "2"


async def test_conditional_update_with_several_matches_is_412(client: httpx.AsyncClient) -> None:
    value = unique("shared")
    body = patient(identifier=[{"system": "urn:shared", "value": value}])
    await _create(client, body)
    await _create(client, body)
    response = await client.put(f"/Patient?identifier=urn:shared|{value}", json=body, headers=FHIR_JSON)
    assert response.status_code == 412
    assert response.json()["issue"][0]["code"] == "multiple-matches"


async def test_conditional_delete_removes_the_single_match(client: httpx.AsyncClient) -> None:
    value = unique("mrn")
    created = await _create(client, patient(identifier=[{"system": "urn:mrn", "value": value}]))
    response = await client.delete(f"/Patient?identifier=urn:mrn|{value}")
    assert response.status_code == 204
    assert (await client.get(f"/Patient/{created['id']}")).status_code == 410


async def test_prefer_return_minimal_and_operation_outcome(client: httpx.AsyncClient) -> None:
    minimal = await client.post("/Patient", json=patient(), headers={**FHIR_JSON, "Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b"" and "location" in minimal.headers
    outcome = await client.post("/Patient", json=patient(), headers={**FHIR_JSON, "Prefer": "return=OperationOutcome"})
    assert outcome.status_code == 201 and outcome.json()["resourceType"] == "OperationOutcome"


async def test_summary_and_elements_subset_and_mark_the_resource(client: httpx.AsyncClient) -> None:
    created = await _create(client, patient(text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">x</div>'}))
    summary = (await client.get(f"/Patient/{created['id']}", params={"_summary": "true"})).json()
    assert "text" not in summary and "name" in summary
    assert any(tag["code"] == "SUBSETTED" for tag in summary["meta"]["tag"])
    elements = (await client.get(f"/Patient/{created['id']}", params={"_elements": "birthDate"})).json()
    assert set(elements) == {"resourceType", "id", "meta", "birthDate"}
    data = (await client.get(f"/Patient/{created['id']}", params={"_summary": "data"})).json()
    assert "text" not in data and "identifier" in data


async def test_search_by_id_and_token(client: httpx.AsyncClient) -> None:
    value = unique("mrn")
    created = await _create(client, patient(identifier=[{"system": "urn:mrn", "value": value}]))
    by_id = (await client.get("/Patient", params={"_id": created["id"]})).json()
    assert [e["resource"]["id"] for e in by_id["entry"]] == [created["id"]]
    for criterion in (f"urn:mrn|{value}", value, "urn:mrn|"):
        found = (await client.get("/Patient", params={"identifier": criterion, "_count": "1000"})).json()
        assert created["id"] in [e["resource"]["id"] for e in found["entry"] if e["search"]["mode"] == "match"]
    none = (await client.get("/Patient", params={"identifier": f"|{value}"})).json()
    assert none["total"] == 0


async def test_search_pages_with_next_links(client: httpx.AsyncClient) -> None:
    family = unique("fam")
    value = unique("grp")
    for _ in range(5):
        await _create(client, patient(family=family, identifier=[{"system": "urn:grp", "value": value}]))
    seen: list[str] = []
    url: str | None = f"/Patient?identifier=urn:grp|{value}&_count=2&_total=accurate"
    while url:
        page = (await client.get(url)).json()
        assert page["total"] == 5
        seen += [e["resource"]["id"] for e in page["entry"]]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert len(seen) == len(set(seen)) == 5


async def test_search_reports_ignored_parameters_or_rejects_them_when_strict(client: httpx.AsyncClient) -> None:
    lenient = (await client.get("/Patient", params={"unknown-param": "x", "_count": "1"})).json()
    outcome = [e for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome and "unknown-param" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    strict = await client.get("/Patient", params={"unknown-param": "x"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400


async def test_post_search_takes_form_parameters(client: httpx.AsyncClient) -> None:
    created = await _create(client, patient())
    response = await client.post("/Patient/_search", data={"_id": created["id"]})
    assert response.status_code == 200
    assert [e["resource"]["id"] for e in response.json()["entry"]] == [created["id"]]


async def test_type_and_system_history_page_with_since(client: httpx.AsyncClient) -> None:
    created = await _create(client, patient())
    since = created["meta"]["lastUpdated"]
    history = (await client.get("/Patient/_history", params={"_since": since, "_count": "1"})).json()
    assert history["type"] == "history" and len(history["entry"]) == 1
    assert any(link["relation"] == "next" for link in history["link"]) or history["total"] == 1
    system = (await client.get("/_history", params={"_count": "2"})).json()
    assert system["total"] >= 1 and len(system["entry"]) <= 2


async def test_history_of_unknown_resource_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/Patient/never-was/_history")).status_code == 404


async def test_validate_reports_problems_without_storing(client: httpx.AsyncClient) -> None:
    good = await client.post("/Patient/$validate", json=patient(), headers=FHIR_JSON)
    assert good.status_code == 200 and good.json()["issue"][0]["severity"] == "information"
    bad = await client.post("/Patient/$validate", json={**patient(), "birthDate": "yesterday"}, headers=FHIR_JSON)
    assert bad.status_code == 200
    assert bad.json()["issue"][0]["severity"] == "error"
    assert bad.json()["issue"][0]["expression"] == ["Patient.birthDate"]
    created = await _create(client, patient())
    instance = await client.post(f"/Patient/{created['id']}/$validate", json=created, headers=FHIR_JSON)
    assert instance.status_code == 200 and instance.json()["issue"][0]["severity"] == "information"


async def test_unknown_operation_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/Patient/$nope", json={"resourceType": "Parameters"}, headers=FHIR_JSON)
    assert response.status_code == 404


_SAMPLE = {"string": "x", "token": "x", "reference": "x", "date": "2020", "number": "1", "quantity": "1", "uri": "http://x"}
_COMPOSITE_SAMPLE = {"token": "a$b", "string": "a$b", "reference": "a$b", "date": "a$2020", "quantity": "a$1", "number": "a$1"}


async def test_capability_statement_claims_only_what_works(client: httpx.AsyncClient, app: Any) -> None:
    """Every search parameter listed for a type is accepted under Prefer: handling=strict."""
    statement = (await client.get("/metadata")).json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    rest = statement["rest"][0]
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch", "history-system"}
    by_type = {r["type"]: r for r in rest["resource"]}
    assert {"read", "vread", "create", "update", "patch", "delete", "search-type"} <= {i["code"] for i in by_type["Patient"]["interaction"]}
    audit_trail = {i["code"] for i in by_type["AuditEvent"]["interaction"]}
    assert {"read", "create", "search-type"} <= audit_trail and not {"patch", "delete"} & audit_trail
    registry = app.state.fhir.search_parameters
    for resource_type in ("Patient", "Observation", "ServiceRequest", "Task", "QuestionnaireResponse", "Condition", "PlanDefinition"):
        params = {p["name"]: p["type"] for p in by_type[resource_type]["searchParam"]}
        assert {"_id", "_lastUpdated", "_tag", "_profile"} <= set(params)
        for name, kind in params.items():
            if kind == "composite":
                second = registry.get(resource_type, name).components[1][0]
                value = _COMPOSITE_SAMPLE[second]
            else:
                value = _SAMPLE[kind]
            response = await client.get(f"/{resource_type}", params={name: value, "_count": "1"}, headers={"Prefer": "handling=strict"})
            assert response.status_code == 200, (resource_type, name, response.text)
    assert [op["name"] for op in by_type["Patient"]["operation"]] == ["validate"]


async def test_xml_is_not_acceptable(client: httpx.AsyncClient) -> None:
    response = await client.get("/metadata", headers={"Accept": "application/fhir+xml"})
    assert response.status_code == 406
    assert response.json()["resourceType"] == "OperationOutcome"
    assert (await client.get("/metadata", params={"_format": "json"})).status_code == 200


async def test_unknown_route_is_an_operation_outcome(client: httpx.AsyncClient) -> None:
    response = await client.get("/Patient/a/b/c/d/e")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}


async def test_swagger_ui_is_served_without_a_cdn(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower()
    assert (await client.get("/static/swagger-ui/swagger-ui-bundle.js")).status_code == 200
    assert (await client.get("/openapi.json")).json()["openapi"].startswith("3.")


async def test_responses_carry_a_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/metadata", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
