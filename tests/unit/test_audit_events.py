"""BALP AuditEvents from what a request did: valid R4, one per patient, none without patient data."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from app.fhir.models import RESOURCE_TYPES
from app.fhir.search_params import SearchParameterRegistry, official_search_parameters
from app.security.access import Access
from app.security.audit import AuditRecord, Touched, audit_events, describe_request, touched_by

_REGISTRY = SearchParameterRegistry(official_search_parameters(), RESOURCE_TYPES)
_WHEN = "2026-12-01T10:00:00.000Z"


def _record(method: str, path: str, status: int = 200, answer: object = None, **fields: object) -> AuditRecord:
    described = describe_request(method, path)
    assert described is not None
    interaction, resource_type, resource_id = described
    return AuditRecord(
        interaction=interaction,
        resource_type=resource_type,
        resource_id=resource_id,
        status=status,
        access=Access(client_id="app", user="Practitioner/p"),
        server="https://fhir.example",
        source_address="10.0.0.1",
        request_id="r-1",
        answer=orjson.dumps(answer) if answer is not None else b"",
        **fields,  # type: ignore[arg-type]
    )


def _events(record: AuditRecord) -> list[dict[str, Any]]:
    record, touched = touched_by(_REGISTRY, record)
    ids = iter(f"e{i}" for i in range(100))
    return audit_events(replace(record, touched=touched), _WHEN, lambda: next(ids))


def test_a_search_over_two_patients_leaves_two_valid_events() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": {"resourceType": "Observation", "id": "o1", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/a"}}},
            {"resource": {"resourceType": "Observation", "id": "o2", "status": "final", "code": {"text": "x"}, "subject": {"reference": "Patient/b"}}},
        ],
    }
    events = _events(_record("GET", "/Observation", answer=bundle, query="GET /Observation?code=x"))
    assert len(events) == 2
    for event in events:
        AuditEvent.model_validate(event)
        assert event["action"] == "E"
        assert event["meta"] == {"profile": ["https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PatientQuery"]}


@pytest.mark.parametrize(
    ("method", "path", "status", "action"),
    [("GET", "/Patient/a", 200, "R"), ("POST", "/Patient", 201, "C"), ("PUT", "/Patient/a", 200, "U"), ("PATCH", "/Patient/a", 200, "U"), ("DELETE", "/Patient/a", 204, "D"), ("GET", "/Patient/a", 403, "R")],
)
def test_each_interaction_has_its_action_and_outcome(method: str, path: str, status: int, action: str) -> None:
    answer = {"resourceType": "Patient", "id": "a", "meta": {"versionId": "2"}} if status < 300 and method != "DELETE" else None
    (event,) = _events(_record(method, path, status, answer))
    AuditEvent.model_validate(event)
    assert event["action"] == action
    assert event["outcome"] == ("0" if status < 400 else "4")


def test_no_event_for_definitions_and_directory_entries() -> None:
    practitioner = {"resourceType": "Practitioner", "id": "x"}
    assert _events(_record("GET", "/Practitioner/x", answer=practitioner)) == []


def test_a_route_outside_the_rest_api_names_the_patient_itself() -> None:
    """E.g. a CDS Hooks call for context.patientId: the caller passes what it touched."""
    record = _record("GET", "/Patient/a", touched=(Touched("Patient", "a", None, frozenset({"a"})),))
    (event,) = _events(record)
    assert {"reference": "Patient/a"} in [e.get("what") for e in event["entity"]]
