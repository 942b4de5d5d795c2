"""CDS Hooks material written by others (../shared/conformance/cds-hooks/): the spec's 2.0.1 request,
discovery and feedback examples and the hook library's R4 contexts are accepted; the 3.0-ballot
invariants, evaluated with FHIRPath, hold for what BackPath answers and catch what breaks them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.cds.client_jwt import trusted_clients
from tests.cds_support import (
    CDS_JSON,
    SKIPPED_INVARIANTS,
    Stub,
    assert_valid_answer,
    codes,
    invariant_failures,
    load_invariants,
    searchset,
    subject_resources,
)


@pytest.fixture(scope="module")
def spec(shared_dir: Path) -> dict[str, Any]:
    return dict(json.loads((shared_dir / "conformance" / "cds-hooks" / "cds-hooks-2.0.1-spec-examples.json").read_text()))


@pytest.fixture(scope="module")
def library(shared_dir: Path) -> dict[str, Any]:
    return dict(json.loads((shared_dir / "conformance" / "cds-hooks" / "cds-hooks-library-hook-context-examples.json").read_text()))


@pytest.fixture(scope="module")
def invariants(shared_dir: Path) -> list[dict[str, Any]]:
    return load_invariants(shared_dir)


def test_only_3_0_features_are_left_out_of_the_invariants(shared_dir: Path, invariants: list[dict[str, Any]]) -> None:
    every = json.loads((shared_dir / "conformance" / "cds-hooks" / "cds-hooks-3.0-ballot-invariants.json").read_text())["invariants"]
    assert {i["id"] for i in every} - {i["id"] for i in invariants} == set(SKIPPED_INVARIANTS) == {"cds-resp-7"}


async def test_the_spec_patient_view_request_is_accepted_and_its_fhir_server_used_with_the_token(
    cds_client: httpx.AsyncClient, spec: dict[str, Any], stub_server: Stub, invariants: list[dict[str, Any]]
) -> None:
    """The example as it stands, with only its fhirServer moved to a real server on loopback (the
    example's host is not reachable from tests): the prefetch holds none of our keys, so the service
    fetches them there with the example's bearer token."""
    request = copy.deepcopy(spec["request-patient-view"])
    assert invariant_failures(request, "CDSHooksRequest", invariants) == []
    request["fhirServer"] = stub_server.url + "/spec-ehr"
    stub_server.serve("/spec-ehr/Patient/1288992", request["prefetch"]["patientToGreet"])
    for resource_type in ("QuestionnaireResponse", "Observation", "ServiceRequest", "Task", "Condition"):
        stub_server.serve(f"/spec-ehr/{resource_type}", searchset())
    seen = len(stub_server.received)
    response = await cds_client.post("/cds-services/lbp-pathway", json=request, headers=CDS_JSON)
    assert response.status_code == 200, response.text
    assert codes(response.json()) == ["status", "sbst-request"]  # no assessment, no STarT Back yet: send it (NL)
    calls = stub_server.received[seen:]
    assert {path.split("?")[0] for path, _ in calls} >= {"/spec-ehr/Patient/1288992", "/spec-ehr/QuestionnaireResponse", "/spec-ehr/Observation"}
    assert {headers["authorization"] for _, headers in calls} == {"Bearer some-opaque-fhir-access-token"}
    assert any("questionnaire=http%3A%2F%2Fbackpath.dev%2Ffhir%2FQuestionnaire%2Flbp-assessment" in path for path, _ in calls)


@pytest.mark.parametrize("example", ["patient-view-context-1", "patient-view-context-2"])
async def test_the_hook_library_patient_view_contexts_are_accepted(cds_client: httpx.AsyncClient, library: dict[str, Any], example: str) -> None:
    context = library[example]["context"]
    body = {"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", "context": context, "prefetch": subject_resources(context["patientId"])}
    response = await cds_client.post("/cds-services/lbp-pathway", json=body, headers=CDS_JSON)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("example", "hook"), [("order-select-context-R4", "order-select"), ("order-sign-context-R4", "order-sign")])
async def test_the_hook_library_order_contexts_are_accepted(cds_client: httpx.AsyncClient, library: dict[str, Any], example: str, hook: str) -> None:
    """Their draft orders (a diet and an antibiotic) are no MR: no imaging card."""
    context = library[example]["context"]
    prefetch = {k: v for k, v in subject_resources(context["patientId"]).items() if k in ("patient", "lbp-assessments")}
    body = {"hook": hook, "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", "context": context, "prefetch": prefetch}
    response = await cds_client.post(f"/cds-services/lbp-imaging-{hook}", json=body, headers=CDS_JSON)
    assert response.status_code == 200, response.text
    assert response.json() == {"cards": []}


async def test_the_spec_draft_orders_context_is_accepted(cds_client: httpx.AsyncClient, spec: dict[str, Any]) -> None:
    context = {**spec["context-order-sign-draftOrders"]["context"], "patientId": "1288992", "userId": "Practitioner/example"}
    prefetch = {k: v for k, v in subject_resources("1288992").items() if k in ("patient", "lbp-assessments")}
    body = {"hook": "order-sign", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", "context": context, "prefetch": prefetch}
    response = await cds_client.post("/cds-services/lbp-imaging-order-sign", json=body, headers=CDS_JSON)
    assert response.status_code == 200 and response.json() == {"cards": []}


def test_discovery_has_the_shape_of_the_spec_example(spec: dict[str, Any]) -> None:
    from app.cds.discovery import discovery_response

    example_keys = {key for service in spec["discovery-response"]["services"] for key in service}
    ours = discovery_response()["services"]
    assert all(set(service) <= example_keys | {"usageRequirements"} for service in ours)
    assert all(isinstance(template, str) for service in ours for template in service["prefetch"].values())


@pytest.mark.parametrize("example", ["feedback-accepted", "feedback-overridden", "feedback-overridden-with-reason"])
async def test_the_spec_feedback_examples_are_stored(
    cds_client: httpx.AsyncClient, spec: dict[str, Any], example: str, invariants: list[dict[str, Any]]
) -> None:
    body = spec[example]
    assert invariant_failures(body, "CDSHooksFeedback", invariants) == []
    response = await cds_client.post("/cds-services/lbp-pathway/feedback", json=body, headers=CDS_JSON)
    assert response.status_code == 200
    assert response.json()["stored"] + response.json()["duplicates"] == 1  # the examples' uuids are fixed: a rerun finds them


@pytest.mark.parametrize(
    ("entry", "invariant"),
    [
        ({"card": "c", "outcome": "dismissed", "outcomeTimestamp": "2021-12-11T10:05:31Z"}, "cds-fb-1"),
        ({"card": "c", "outcome": "accepted", "outcomeTimestamp": "2021-12-11T10:05:31Z"}, "cds-fb-2"),
        ({"card": "c", "outcome": "overridden", "overrideReason": {}, "outcomeTimestamp": "2021-12-11T10:05:31Z"}, "cds-fb-3"),
    ],
)
async def test_feedback_breaking_an_invariant_is_refused(
    cds_client: httpx.AsyncClient, entry: dict[str, Any], invariant: str, invariants: list[dict[str, Any]]
) -> None:
    body = {"feedback": [entry]}
    assert [f.split(" ")[0] for f in invariant_failures(body, "CDSHooksFeedback", invariants)] == [invariant]
    response = await cds_client.post("/cds-services/lbp-pathway/feedback", json=body, headers=CDS_JSON)
    assert response.status_code == 400 and response.json()["resourceType"] == "OperationOutcome"


def test_the_checker_catches_what_the_spec_examples_get_wrong(spec: dict[str, Any], invariants: list[dict[str, Any]]) -> None:
    """standards.md §7: response-cards-2 has no indicator; cards breaking the invariants fail them."""
    assert_valid_answer(spec["response-cards-1"], invariants)
    with pytest.raises(KeyError):
        assert_valid_answer(spec["response-cards-2"], invariants)
    broken = copy.deepcopy(spec["response-cards-1"])
    broken["cards"][0]["links"][0]["appContext"] = "{}"  # appContext on an absolute link
    broken["cards"][1]["overrideReasons"][0].pop("display")
    broken["cards"][1]["suggestions"] = [{"label": "x", "actions": [{"type": "delete", "resource": {"resourceType": "Patient"}}]}]
    failed = {f.split(" ")[0] for f in invariant_failures(broken, "CDSHooksResponse", invariants)}
    assert failed == {"cds-resp-2", "cds-resp-3", "cds-resp-4", "cds-resp-5", "cds-resp-6"}


def test_the_sandbox_client_key_can_be_allowlisted(shared_dir: Path) -> None:
    jwks = json.loads((shared_dir / "conformance" / "cds-hooks" / "sandbox-jwks-public.json").read_text())
    clients = trusted_clients(json.dumps({"https://sandbox.cds-hooks.org": {"jwks": jwks}}))
    assert clients["https://sandbox.cds-hooks.org"].keys[0]["kid"] == "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"
