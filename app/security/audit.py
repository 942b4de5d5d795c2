"""AuditEvents in the shape of IHE Basic Audit Log Patterns (BALP), built from what one request did.

Spec: https://profiles.ihe.net/ITI/BALP/ (Read, Query, Create, Update, Delete and their Patient
variants) on https://hl7.org/fhir/R4/auditevent.html. One AuditEvent per patient whose data the
request touched, as BALP asks for queries, so each patient's disclosures can be listed on their own;
one without a patient entity when no patient is identified.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import orjson

from app.fhir.models import RESOURCE_TYPES, SUBSETTED_TAG
from app.fhir.search_params import SearchParameterRegistry
from app.security.access import NON_PATIENT_TYPES, Access
from app.security.compartment import patients_of

__all__ = ["SEARCH_PARAMETERS", "AuditRecord", "Touched", "audit_events", "describe_request", "touched_by"]

# What an auditor searches the trail by (IHE RESTful ATNA's Retrieve ATNA Audit Event, ITI-81): only
# these are indexed, as indexing every AuditEvent parameter made writing the trail cost more than
# the request it records.
SEARCH_PARAMETERS = frozenset(
    {"_id", "_lastUpdated", "date", "patient", "agent", "altid", "address", "entity", "entity-type", "type", "subtype", "action", "outcome", "source"}
)

_BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_PATIENT_ENTITY = {"type": {"system": _ENTITY_TYPE, "code": "1", "display": "Person"}, "role": {"system": _OBJECT_ROLE, "code": "1", "display": "Patient"}}
_DATA_ENTITY = {
    "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
    "role": {"system": _OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
}
_QUERY_ENTITY = {
    "type": {"system": _ENTITY_TYPE, "code": "2", "display": "System Object"},
    "role": {"system": _OBJECT_ROLE, "code": "24", "display": "Query"},
}
_REQUEST_ID_TYPE = {"system": "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType", "code": "XrequestId"}
# BALP profile per interaction, for successful events.
_PROFILES = {
    "read": "Read",
    "vread": "Read",
    "search-type": "Query",
    "history-instance": "Query",
    "history-type": "Query",
    "history-system": "Query",
    "create": "Create",
    "update": "Update",
    "patch": "Update",
    "delete": "Delete",
}
_ACTIONS = {"read": "R", "vread": "R", "create": "C", "update": "U", "patch": "U", "delete": "D"}


@dataclass(frozen=True)
class Touched:
    """A resource the request read or wrote (`id` empty: returned by an operation, not stored);
    `patients` None until looked up, when the answer did not carry the content."""

    type: str
    id: str
    version: str | None = None
    patients: frozenset[str] | None = None


@dataclass(frozen=True)
class AuditRecord:
    """What one request did, as far as the audit trail needs to know."""

    interaction: str  # a http://hl7.org/fhir/restful-interaction code, or "operation"
    resource_type: str | None
    resource_id: str | None
    status: int
    access: Access
    server: str  # base URL
    source_address: str | None
    request_id: str
    query: str | None = None  # the raw request of a search, history or operation
    answer: bytes = b""  # the response body (FHIR JSON) ...
    location: str | None = None  # ... and Location header: what was touched is read from them
    touched: tuple[Touched, ...] = ()


def describe_request(method: str, path: str) -> tuple[str, str | None, str | None] | None:
    """(interaction, resource type, id) of a FHIR REST request, or None when the path is not one."""
    parts = [p for p in path.split("/") if p]
    if parts and parts[-1].startswith("$"):
        return "operation", parts[0] if len(parts) > 1 else None, parts[1] if len(parts) > 2 else None
    if not parts:
        return ("transaction", None, None) if method == "POST" else None
    if parts == ["_history"]:
        return "history-system", None, None
    if parts[0] not in RESOURCE_TYPES:
        return None
    resource_type = parts[0]
    if len(parts) == 1:
        interaction = {"GET": "search-type", "POST": "create", "PUT": "update", "DELETE": "delete"}.get(method)
        return (interaction, resource_type, None) if interaction else None
    if parts[1] == "_search":
        return "search-type", resource_type, None
    if parts[1] == "_history":
        return "history-type", resource_type, None
    if len(parts) == 3 and parts[2] in RESOURCE_TYPES:
        return "search-type", parts[2], None  # compartment search Patient/{id}/{type}
    if len(parts) == 2:
        interaction = {"GET": "read", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
        return (interaction, resource_type, parts[1]) if interaction else None
    if parts[2] == "_history":
        return ("vread" if len(parts) == 4 else "history-instance"), resource_type, parts[1]
    return None


def touched_by(registry: SearchParameterRegistry, record: AuditRecord) -> tuple[AuditRecord, tuple[Touched, ...]]:
    """What the request touched, read from its answer: the resources returned (with their patients
    when the content shows them), or those the answer reports written (Location, response entries),
    or else the resource the request addressed; added to what the caller already named in
    `record.touched` (a route outside the REST API, e.g. a CDS service for `context.patientId`).
    Also the interaction, refined for `POST /`."""
    answer: Any = None
    if record.answer[:1] == b"{":
        try:
            answer = orjson.loads(record.answer)
        except orjson.JSONDecodeError:
            answer = None
    found: list[Touched] = list(record.touched)
    kind = answer.get("resourceType") if isinstance(answer, dict) else None
    if kind == "Bundle":
        for entry in answer.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and resource.get("resourceType") not in (None, "OperationOutcome"):
                found.append(_of(registry, resource))
            elif isinstance(entry, dict) and isinstance(entry.get("response"), dict):
                found.extend(_located(entry["response"].get("location")))
        bundle_kind = {"transaction-response": "transaction", "batch-response": "batch"}.get(answer.get("type", ""))
        if bundle_kind is not None:
            record = replace(record, interaction=bundle_kind)
    elif kind == "Parameters":
        for parameter in answer.get("parameter") or []:
            if isinstance(parameter, dict) and isinstance(parameter.get("resource"), dict):
                found.append(_of(registry, parameter["resource"]))
    elif isinstance(kind, str) and kind != "OperationOutcome":
        found.append(_of(registry, answer))
    if not found:
        found.extend(_located(record.location))
    if not found and record.resource_type is not None and record.resource_id is not None and record.interaction != "operation":
        found.append(Touched(record.resource_type, record.resource_id))  # a delete or a refusal: look up whose it is
    return record, tuple(found)


def _of(registry: SearchParameterRegistry, resource: dict[str, Any]) -> Touched:
    resource_id = resource.get("id")
    meta: dict[str, Any] = resource["meta"] if isinstance(resource.get("meta"), dict) else {}
    version = meta.get("versionId") if isinstance(meta.get("versionId"), str) else None
    subsetted = any(isinstance(t, dict) and t.get("code") == SUBSETTED_TAG["code"] for t in meta.get("tag") or [])
    if not isinstance(resource_id, str):
        return Touched(resource["resourceType"], "", None, patients_of(registry, resource))
    # a _summary/_elements answer may lack the references: the stored version tells whose it is
    return Touched(resource["resourceType"], resource_id, version, None if subsetted else patients_of(registry, resource))


def _located(location: Any) -> list[Touched]:
    """`Type/id/_history/v` from a Location header or a response entry (absolute or relative)."""
    if not isinstance(location, str):
        return []
    parts = location.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        return [Touched(parts[-4], parts[-3], parts[-1])]
    return []


def audit_events(record: AuditRecord, recorded: str, new_id: Callable[[], str]) -> list[dict[str, Any]]:
    """The AuditEvents for `record`: one per patient touched, one without a patient otherwise; none
    when the request touched no patient data (definitions, terminology, directory entries)."""
    by_patient: dict[str | None, list[Touched]] = {}
    for touched in record.touched:
        if touched.patients:
            for patient in sorted(touched.patients):
                by_patient.setdefault(patient, []).append(touched)
        elif touched.type not in NON_PATIENT_TYPES:  # no patient identified, but possibly patient data
            by_patient.setdefault(None, []).append(touched)
    if not by_patient:
        if not _may_hold_patient_data(record):
            return []
        by_patient[None] = []
    return [_event(record, recorded, patient, touched, new_id()) for patient, touched in by_patient.items()]


def _may_hold_patient_data(record: AuditRecord) -> bool:
    return record.status == 403 or record.resource_type is None or record.resource_type not in NON_PATIENT_TYPES


def _event(record: AuditRecord, recorded: str, patient: str | None, touched: list[Touched], event_id: str) -> dict[str, Any]:
    success = record.status < 400
    entities: list[dict[str, Any]] = []
    if patient is not None:
        entities.append({"what": {"reference": f"Patient/{patient}"}, **_PATIENT_ENTITY})
    for item in touched:
        if item.type == "Patient" and item.id == patient and record.interaction in ("read", "vread"):
            continue  # the patient entity already names it
        if not item.id:  # a resource an operation returned without storing it
            entities.append({"what": {"display": item.type}, **_DATA_ENTITY})
            continue
        reference = f"{item.type}/{item.id}" + (f"/_history/{item.version}" if item.version else "")
        entities.append({"what": {"reference": reference}, **_DATA_ENTITY})
    if record.query is not None:
        entities.append({**_QUERY_ENTITY, "query": base64.b64encode(record.query.encode()).decode()})
    elif not touched and record.resource_type is not None:
        target = "/".join(p for p in (record.resource_type, record.resource_id) if p)
        entities.append({"what": {"reference": target} if record.resource_id else {"display": target}, **_DATA_ENTITY})
    entities.append({"what": {"identifier": {"value": record.request_id}}, "type": _REQUEST_ID_TYPE})
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": event_id,
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "Restful Operation"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": record.interaction}],
        "action": _ACTIONS.get(record.interaction, "E"),
        "recorded": recorded,
        "outcome": "0" if success else ("4" if record.status < 500 else "8"),
        "agent": _agents(record),
        "source": {
            "site": record.server,
            "observer": {"display": "BackPath"},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}],
        },
        "entity": entities,
    }
    if not success:
        event["outcomeDesc"] = f"HTTP {record.status}"
    profile = _PROFILES.get(record.interaction)
    if success and profile:
        event["meta"] = {"profile": [f"{_BALP}{'Patient' if patient else ''}{profile}"]}
    return event


def _agents(record: AuditRecord) -> list[dict[str, Any]]:
    access = record.access
    client: dict[str, Any] = {
        "type": {"coding": [{"system": _DCM, "code": "110153", "display": "Source Role ID"}]},
        "who": {"display": access.client_id or "unknown client"},
        "requestor": access.user is None,
    }
    if access.client_id:
        client["altId"] = access.client_id
    if record.source_address:
        client["network"] = {"address": record.source_address, "type": "2"}
    server = {
        "type": {"coding": [{"system": _DCM, "code": "110152", "display": "Destination Role ID"}]},
        "who": {"display": "BackPath"},
        "requestor": False,
        "network": {"address": record.server, "type": "5"},
    }
    agents = [client, server]
    if access.user is not None:
        user: dict[str, Any] = {
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP", "display": "information recipient"}]},
            "requestor": True,
            "altId": access.user,
        }
        local = access.user.split("/")
        user["who"] = {"reference": access.user} if len(local) == 2 and local[0] in RESOURCE_TYPES else {"display": access.user}
        agents.append(user)
    return agents
