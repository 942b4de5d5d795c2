"""CDS Hooks over HTTP, in-process, with client authentication on (every call signed by the
`cds_client` fixture, which also checks every answer against the 2.0.1 rules and the 3.0-ballot
invariants): discovery, patient-view and the order hooks from prefetch and from the own store, 412s,
the pathway and language choices, errors, and stored, counted feedback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from app.cds.discovery import find_service
from app.cds.hooks import parse_hook_request
from app.config import Settings
from app.fhir.outcome import FhirError
from app.main import create_app
from app.services.audit import AuditTrail, AuditWriter
from app.services.cds import cds_hooks
from app.services.cds_data import DataSources, subject_data
from app.services.cds_feedback import feedback_summary
from app.services.search import search
from tests.cds_support import (
    CDS_JSON,
    TODAY,
    ClientJwt,
    ClientKeys,
    codes,
    hook_request,
    mr_order,
    subject_resources,
)
from tests.factories import (
    FHIR_JSON,
    assessment_response,
    non_specific_answers,
    patient,
    scored_sbst_response,
    unique,
)
from tests.tokens import Issuer


async def _call(client: httpx.AsyncClient, service: str, body: dict[str, Any], status: int = 200, **headers: str) -> dict[str, Any]:
    response = await client.post(f"/cds-services/{service}", json=body, headers={**CDS_JSON, **headers})
    assert response.status_code == status, response.text
    return dict(response.json())


async def test_discovery_lists_the_services_as_json(cds_client: httpx.AsyncClient) -> None:
    response = await cds_client.get("/cds-services")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    services = {s["id"]: s for s in response.json()["services"]}
    assert services["lbp-pathway"]["hook"] == "patient-view"
    assert services["lbp-imaging-order-sign"]["prefetch"]["patient"] == "Patient/{{context.patientId}}"


async def test_patient_view_from_the_prefetch(cds_client: httpx.AsyncClient) -> None:
    body = hook_request("patient-view", "pv-1", subject_resources("pv-1", weeks=1), extension={"dev.backpath.pathway": "dk-midtjylland"})
    answer = await _call(cds_client, "lbp-pathway", body)
    assert codes(answer)[0] == "status"
    assert {"reassess-t2", "reassess-t4", "reassess-t8", "practice-sector-treatment", "self-management-advice"} <= set(codes(answer))
    assert answer["cards"][0]["source"]["url"] == "http://testserver/PlanDefinition/dk-midtjylland"
    t2 = next(c for c in answer["cards"] if c["source"].get("topic", {}).get("code") == "reassess-t2")
    task = t2["suggestions"][0]["actions"][0]["resource"]
    assert task["for"] == {"reference": "Patient/pv-1"} and task["requester"] == {"reference": "Practitioner/gp-1"}


async def test_the_default_pathway_is_the_deployments(cds_client: httpx.AsyncClient) -> None:
    answer = await _call(cds_client, "lbp-pathway", hook_request("patient-view", "pv-2", subject_resources("pv-2", sbst=None)))
    assert answer["cards"][0]["source"]["label"].startswith("Zorgpad Lage rugklachten")
    assert "sbst-request" in codes(answer)  # NL asks for the STarT Back when there is none


async def test_language_from_the_extension_or_accept_language(cds_client: httpx.AsyncClient) -> None:
    orders = [mr_order("lang-1")]
    prefetch = {k: v for k, v in subject_resources("lang-1").items() if k in ("patient", "lbp-assessments")}
    body = hook_request("order-sign", "lang-1", prefetch, orders=orders, extension={"dev.backpath.pathway": "dk-sjaelland"})
    danish = await _call(cds_client, "lbp-imaging-order-sign", body, **{"Accept-Language": "da-DK,da;q=0.9,en;q=0.5"})
    assert danish["cards"][0]["summary"] == "MR af lænderyggen er ikke indiceret nu"
    assert danish["cards"][0]["overrideReasons"][0]["display"] == "Mistanke om rødt flag, endnu ikke registreret"
    body["extension"]["dev.backpath.language"] = "en"
    english = await _call(cds_client, "lbp-imaging-order-sign", body, **{"Accept-Language": "da"})
    assert english["cards"][0]["summary"] == "MR of the lumbar spine is not indicated now"
    assert {r["code"] for r in english["cards"][0]["overrideReasons"]} >= {"red-flag-suspected", "clinical-judgement"}


@pytest.mark.parametrize("hook", ["order-select", "order-sign"])
async def test_imaging_advice_at_order_time(cds_client: httpx.AsyncClient, hook: str) -> None:
    service = f"lbp-imaging-{hook}"
    keep = ("patient", "lbp-assessments")

    def body(weeks: int, **changes: Any) -> dict[str, Any]:
        prefetch = {k: v for k, v in subject_resources("img-1", weeks=weeks, **changes).items() if k in keep}
        return hook_request(hook, "img-1", prefetch, orders=[mr_order("img-1", order_id="draft-mr")])

    early = await _call(cds_client, service, body(2))
    assert codes(early) == ["imaging-not-indicated"] and early["cards"][0]["indicator"] == "warning"
    assert early["cards"][0]["suggestions"][0]["actions"][0] == {
        "type": "delete", "description": "Remove the draft order for MR of the lumbar spine.", "resourceId": "ServiceRequest/draft-mr",
    }  # fmt: skip
    assert (await _call(cds_client, service, body(2, red_flag_serious_pathology=True)))["cards"][0]["indicator"] == "warning"
    assert codes(await _call(cds_client, service, body(2, red_flag_serious_pathology=True))) == ["serious-pathology-workup"]
    cauda = await _call(cds_client, service, body(2, red_flag_cauda_equina=True))
    assert codes(cauda) == ["acute-referral"] and cauda["cards"][0]["indicator"] == "critical"
    assert (await _call(cds_client, service, body(5)))["cards"] == []


async def test_order_select_looks_at_the_selection_only(cds_client: httpx.AsyncClient) -> None:
    prefetch = {k: v for k, v in subject_resources("sel-1").items() if k in ("patient", "lbp-assessments")}
    orders = [mr_order("sel-1", order_id="old-mr"), {"resourceType": "MedicationRequest", "id": "new-med", "status": "draft", "intent": "order"}]
    body = hook_request("order-select", "sel-1", prefetch, orders=orders, context={"selections": ["MedicationRequest/new-med"]})
    assert (await _call(cds_client, "lbp-imaging-order-select", body))["cards"] == []


async def test_own_store_when_the_fhir_server_is_backpath_itself(cds_client: httpx.AsyncClient, client: httpx.AsyncClient) -> None:
    created = await client.post("/Patient", json=patient(family=unique("Cds"), birthDate="1980-08-08"), headers=FHIR_JSON)
    patient_id = created.json()["id"]
    subject = f"Patient/{patient_id}"
    t0 = (TODAY - timedelta(weeks=1)).isoformat()
    for resource in (
        scored_sbst_response(subject, 2, 1, authored=t0),
        assessment_response(subject, TODAY.isoformat(), **non_specific_answers(t0)),
    ):
        assert (await client.post("/QuestionnaireResponse", json=resource, headers=FHIR_JSON)).status_code == 201
    task = {
        "resourceType": "Task", "status": "requested", "intent": "order", "for": {"reference": subject},
        "instantiatesCanonical": "http://backpath.dev/fhir/ActivityDefinition/reassess-t4",
        "code": {"coding": [{"system": "http://backpath.dev/fhir/CodeSystem/lbp-action", "code": "reassess-t4", "display": "Reassessment at T4"}]},
    }  # fmt: skip
    task_id = (await client.post("/Task", json=task, headers=FHIR_JSON)).json()["id"]
    body = hook_request("patient-view", patient_id, fhirServer="http://testserver", extension={"dev.backpath.pathway": "dk-sjaelland"})
    answer = await _call(cds_client, "lbp-pathway", body)
    assert "low risk" in answer["cards"][0]["detail"]
    assert f"Task/{task_id} (requested)" in answer["cards"][0]["detail"]
    t4 = next(c for c in answer["cards"] if c["source"].get("topic", {}).get("code") == "reassess-t4")
    assert "suggestions" not in t4  # already requested
    unknown = hook_request("patient-view", "not-stored-" + unique(), fhirServer="http://testserver/")
    outcome = await _call(cds_client, "lbp-pathway", unknown, 412)
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "incomplete"


async def test_missing_data_that_cannot_be_fetched_is_412(cds_client: httpx.AsyncClient) -> None:
    prefetch = subject_resources("miss-1")
    del prefetch["lbp-assessments"]
    outcome = await _call(cds_client, "lbp-pathway", hook_request("patient-view", "miss-1", prefetch), 412)
    assert outcome["issue"][0]["expression"] == ["prefetch.lbp-assessments"]
    assert "no fhirServer" in outcome["issue"][0]["diagnostics"]
    prefetch = subject_resources("miss-1")
    prefetch["patient"] = None
    assert (await _call(cds_client, "lbp-pathway", hook_request("patient-view", "miss-1", prefetch), 412))["issue"][0]["expression"] == ["prefetch.patient"]
    prefetch["patient"] = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "forbidden"}]}
    await _call(cds_client, "lbp-pathway", hook_request("patient-view", "miss-1", prefetch), 412)
    # optional keys (open requests, conditions) may be missing
    assert (await _call(cds_client, "lbp-pathway", hook_request("patient-view", "miss-1", subject_resources("miss-1"))))["cards"]


@pytest.mark.parametrize(
    ("service", "body", "status"),
    [
        ("no-such-service", hook_request("patient-view", "e-1", subject_resources("e-1")), 404),
        ("lbp-pathway", hook_request("order-sign", "e-1", subject_resources("e-1"), orders=[]), 400),
        ("lbp-pathway", hook_request("patient-view", "e-1", subject_resources("e-1"), extension={"dev.backpath.pathway": "dk-nordjylland"}), 400),
        ("lbp-pathway", hook_request("patient-view", "e-1", {**subject_resources("e-1"), "patient": {"resourceType": "Patient", "id": "e-1", "birthDate": "1970-13-45"}}), 422),
        ("lbp-pathway", hook_request("patient-view", "e-1", {**subject_resources("e-1"), "lbp-assessments": "text"}), 400),
        ("lbp-imaging-order-sign", hook_request("order-sign", "e-1", subject_resources("e-1")), 400),
    ],
    ids=["unknown service", "wrong hook", "unknown pathway", "invalid resource", "not FHIR", "no draftOrders"],
)
async def test_bad_calls_are_operation_outcomes(cds_client: httpx.AsyncClient, service: str, body: dict[str, Any], status: int) -> None:
    outcome = await _call(cds_client, service, body, status)
    assert outcome["resourceType"] == "OperationOutcome" and "Traceback" not in str(outcome)


async def test_a_body_that_is_not_json_is_400(cds_client: httpx.AsyncClient) -> None:
    response = await cds_client.post("/cds-services/lbp-pathway", content=b"{not json", headers=CDS_JSON)
    assert response.status_code == 400 and response.json()["resourceType"] == "OperationOutcome"


async def test_feedback_is_stored_once_and_counted(cds_client: httpx.AsyncClient, cds_app: FastAPI) -> None:
    prefetch = {k: v for k, v in subject_resources("fb-1").items() if k in ("patient", "lbp-assessments")}
    answer = await _call(cds_client, "lbp-imaging-order-sign", hook_request("order-sign", "fb-1", prefetch, orders=[mr_order("fb-1")]))
    card = answer["cards"][0]
    reason = card["overrideReasons"][2]
    context = cds_app.state.fhir
    before = await feedback_summary(context, "lbp-imaging-order-sign")
    reports = {"feedback": [
        {"card": card["uuid"], "outcome": "accepted", "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}], "outcomeTimestamp": "2026-01-05T10:00:00Z"},
        {"card": unique("card"), "outcome": "overridden", "overrideReason": {"reason": reason, "userComment": "MR planned by the neurologist"}, "outcomeTimestamp": "2026-01-05T10:01:00Z"},
        {"card": unique("card"), "outcome": "overridden", "outcomeTimestamp": "2026-01-05T10:02:00Z"},
    ]}  # fmt: skip
    response = await cds_client.post("/cds-services/lbp-imaging-order-sign/feedback", json=reports, headers=CDS_JSON)
    assert response.status_code == 200 and response.json() == {"stored": 3, "duplicates": 0}
    again = await cds_client.post("/cds-services/lbp-imaging-order-sign/feedback", json=reports, headers=CDS_JSON)
    assert again.json() == {"stored": 0, "duplicates": 3}
    after = await feedback_summary(context, "lbp-imaging-order-sign")
    assert (after.accepted - before.accepted, after.overridden - before.overridden) == (1, 2)
    key = (reason["system"], reason["code"])
    assert after.override_reasons.get(key, 0) - before.override_reasons.get(key, 0) == 1
    broken = await cds_client.post("/cds-services/lbp-imaging-order-sign/feedback", json={"feedback": [{"card": "x", "outcome": "accepted", "outcomeTimestamp": "2026-01-05T10:00:00Z"}]}, headers=CDS_JSON)
    assert broken.status_code == 400
    assert (await feedback_summary(context, "lbp-imaging-order-sign")) == after
    unknown = await cds_client.post("/cds-services/nope/feedback", json=reports, headers=CDS_JSON)
    assert unknown.status_code == 404


async def test_a_plain_http_fhir_server_is_not_used_outside_development(cds_app: FastAPI) -> None:
    service = find_service("lbp-pathway")
    assert service is not None
    request = parse_hook_request(hook_request("patient-view", "h-1", fhirServer="http://ehr.example"), service)
    with pytest.raises(FhirError) as raised:
        await subject_data(cds_app.state.fhir, DataSources(1.0, 1000, allow_http=False), service, request, "http://testserver")
    assert raised.value.status == 412 and "https" in raised.value.diagnostics


def test_client_authentication_is_on_in_production_and_off_in_development(database_url: str) -> None:
    production = cds_hooks(Settings(database_url=database_url, dev_mode=False, cds_client_auth=None, cds_allow_http=None, cds_clients=""))
    assert production.authenticator is not None and production.authenticator.clients == {}
    assert production.sources.allow_http is False
    development = cds_hooks(Settings(database_url=database_url, dev_mode=True, cds_client_auth=None, cds_allow_http=None))
    assert development.authenticator is None and development.sources.allow_http is True
    forced = cds_hooks(Settings(database_url=database_url, dev_mode=True, cds_client_auth=True, cds_clients=""))
    assert forced.authenticator is not None
    with pytest.raises(ValueError):
        cds_hooks(Settings(database_url=database_url, cds_client_auth=True, cds_clients='{"https://x": {}}'))


async def test_a_service_call_leaves_an_audit_event_for_its_patient(cds_client: httpx.AsyncClient, cds_app: FastAPI) -> None:
    """As a FHIR read of the patient's data would: the CDS client as agent, context.userId as user."""
    trail = AuditTrail(AuditWriter(cds_app.state.fhir))
    cds_app.state.audit = trail
    patient_id = unique("audited")
    body = hook_request("patient-view", patient_id, subject_resources(patient_id, weeks=1))
    try:
        await _call(cds_client, "lbp-pathway", body)
    finally:
        cds_app.state.audit = None
        await trail.close()
    found = orjson.loads(orjson.dumps(await search(cds_app.state.fhir, "http://testserver", "AuditEvent", [("patient", f"Patient/{patient_id}")])))
    (event,) = [e["resource"] for e in found.get("entry", [])]
    assert event["action"] == "E" and event["outcome"] == "0"
    agents = {a.get("who", {}).get("identifier", {}).get("value") or a.get("altId") or a.get("who", {}).get("reference") for a in event["agent"]}
    assert body["context"]["userId"] in agents


@pytest.fixture(scope="module")
async def secured_cds(cds_settings: Settings, issuer: Issuer, client_keys: ClientKeys) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """A production server: (a FHIR client, a CDS client); the FHIR API needs tokens from the test issuer."""
    settings = replace(cds_settings, dev_mode=False, audit=True, auth_issuer=issuer.name, auth_jwks_file=issuer.jwks_file)
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://testserver") as fhir,
            httpx.AsyncClient(transport=transport, base_url="http://testserver", auth=ClientJwt(client_keys)) as cds,
        ):
            yield fhir, cds


async def test_own_store_reads_hold_to_the_fhir_authorization_token(
    secured_cds: tuple[httpx.AsyncClient, httpx.AsyncClient], issuer: Issuer
) -> None:
    """With authentication on, reading this server's records for a call needs a token for it, and
    what the token may not read stays unread: as for any FHIR client."""
    fhir, cds = secured_cds
    admin = {**FHIR_JSON, **issuer.headers("user/*.cruds", aud="http://testserver")}
    ids = []
    for family in ("Cds-own", "Cds-other"):
        created = await fhir.post("/Patient", json=patient(family=unique(family)), headers=admin)
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    mine, other = ids

    def call(patient_id: str, scope: str | None, **claims: str) -> dict[str, Any]:
        body = hook_request("patient-view", patient_id, fhirServer="http://testserver")
        if scope is not None:
            token = issuer.token(scope, aud="http://testserver", **claims)
            body["fhirAuthorization"] = {"access_token": token, "token_type": "Bearer", "expires_in": 300, "scope": scope, "subject": "cds"}
        return body

    assert (await cds.post("/cds-services/lbp-pathway", json=call(mine, None), headers=CDS_JSON)).status_code == 412
    allowed = await cds.post("/cds-services/lbp-pathway", json=call(mine, "user/*.rs"), headers=CDS_JSON)
    assert allowed.status_code == 200, allowed.text
    for_another = await cds.post("/cds-services/lbp-pathway", json=call(other, "patient/*.rs", patient=mine), headers=CDS_JSON)
    assert for_another.status_code == 403, for_another.text
