"""CDS Hooks between real processes: the CDS service fetching what the prefetch lacks from a real
FHIR server (`backpath serve` on loopback) with the client's bearer token, giving up on a slow or
failing one with 412, and a running server answering hooks from its own store."""

from __future__ import annotations

import time
from datetime import date, timedelta
from typing import Any

import httpx

from tests.cds_support import CDS_JSON, Stub, codes, hook_request, mr_order, searchset
from tests.factories import (
    FHIR_JSON,
    assessment_response,
    non_specific_answers,
    patient,
    scored_sbst_response,
    unique,
)

TODAY = date.today()
TOKEN = {"access_token": "opaque-token-for-the-ehr", "token_type": "Bearer", "expires_in": 300, "scope": "user/*.read", "subject": "backpath-cds"}


def _store_subject(live_server: str, weeks: int, **changes: Any) -> str:
    """A patient with an SBST response and an assessment, posted to the live server; its id."""
    t0 = (TODAY - timedelta(weeks=weeks)).isoformat()
    with httpx.Client(base_url=live_server, timeout=30) as http:
        patient_id = str(http.post("/Patient", json=patient(family=unique("CdsLive"), birthDate="1966-06-06"), headers=FHIR_JSON).json()["id"])
        subject = f"Patient/{patient_id}"
        for resource in (scored_sbst_response(subject, 6, 4, authored=t0), assessment_response(subject, TODAY.isoformat(), **non_specific_answers(t0, **changes))):
            assert http.post("/QuestionnaireResponse", json=resource, headers=FHIR_JSON).status_code == 201
    return patient_id


async def test_without_prefetch_the_data_comes_from_the_fhir_server_over_http(cds_client: httpx.AsyncClient, live_server: str) -> None:
    patient_id = _store_subject(live_server, weeks=1)
    body = hook_request("patient-view", patient_id, fhirServer=live_server, fhirAuthorization=TOKEN, extension={"dev.backpath.pathway": "dk-sjaelland"})
    response = await cds_client.post("/cds-services/lbp-pathway", json=body, headers=CDS_JSON)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert "**STarT Back:** high risk" in answer["cards"][0]["detail"]
    assert {"reassess-t2", "reassess-t4", "reassess-t8"} <= set(codes(answer))
    order = hook_request("order-sign", patient_id, fhirServer=live_server, fhirAuthorization=TOKEN, orders=[mr_order(patient_id)])
    warned = await cds_client.post("/cds-services/lbp-imaging-order-sign", json=order, headers=CDS_JSON)
    assert codes(warned.json()) == ["imaging-not-indicated"]


async def test_the_bearer_token_goes_to_the_fhir_server_and_a_slow_or_failing_one_is_412(cds_client: httpx.AsyncClient, stub_server: Stub) -> None:
    base = stub_server.url + "/slow-ehr"
    stub_server.serve("/slow-ehr/Patient/slow-1", {"resourceType": "Patient", "id": "slow-1", "birthDate": "1970-01-01"})
    stub_server.serve("/slow-ehr/QuestionnaireResponse", searchset(), delay=3.0)
    seen = len(stub_server.received)
    started = time.monotonic()
    body = hook_request("order-sign", "slow-1", fhirServer=base, fhirAuthorization=TOKEN, orders=[])
    response = await cds_client.post("/cds-services/lbp-imaging-order-sign", json=body, headers=CDS_JSON)
    assert response.status_code == 412 and response.json()["issue"][0]["expression"] == ["prefetch.lbp-assessments"]
    assert time.monotonic() - started < 2.5  # the fetch timeout (1 s in the tests), not the server's 3 s
    assert all(headers["authorization"] == "Bearer opaque-token-for-the-ehr" for _, headers in stub_server.received[seen:])
    stub_server.serve("/failing-ehr/Patient/slow-1", {"resourceType": "Patient", "id": "slow-1"})
    stub_server.serve("/failing-ehr/QuestionnaireResponse", {"resourceType": "OperationOutcome"}, status=500)
    failing = hook_request("order-sign", "slow-1", fhirServer=stub_server.url + "/failing-ehr", orders=[])
    assert (await cds_client.post("/cds-services/lbp-imaging-order-sign", json=failing, headers=CDS_JSON)).status_code == 412
    missing = hook_request("order-sign", "gone-1", fhirServer=stub_server.url + "/failing-ehr", orders=[], prefetch={"lbp-assessments": None})
    gone = await cds_client.post("/cds-services/lbp-imaging-order-sign", json=missing, headers=CDS_JSON)
    assert gone.status_code == 412 and gone.json()["issue"][0]["expression"] == ["prefetch.patient"]


def test_a_running_server_answers_hooks_from_its_own_store(live_server: str) -> None:
    patient_id = _store_subject(live_server, weeks=1, red_flag_cauda_equina=True)
    with httpx.Client(base_url=live_server, timeout=30) as http:
        assert http.get("/cds-services").status_code == 200  # development mode: no client authentication
        body = hook_request("order-select", patient_id, fhirServer=live_server, orders=[mr_order(patient_id)])
        response = http.post("/cds-services/lbp-imaging-order-select", json=body, headers=CDS_JSON)
    assert response.status_code == 200, response.text
    card = response.json()["cards"][0]
    assert card["indicator"] == "critical" and card["source"]["topic"]["code"] == "acute-referral"
    assert len(response.json()["cards"]) == 1
