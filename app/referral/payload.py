"""What of a record travels with a referral, and the Tasks and changes both sides keep.

Pure functions over plain JSON; the services fetch and store. Spec: https://hl7.org/fhir/R4/task.html,
https://hl7.org/fhir/R4/servicerequest.html, `../shared/referral-standards.md` §1 and §3.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from app.fhir.outcome import ErrorCategory, FhirError
from app.referral import codes
from app.referral.workflow import DECISIONS, Decision, is_terminal, task_path

__all__ = [
    "Change",
    "business_status",
    "decided_request",
    "decided_task",
    "has_sbst",
    "owner_task",
    "referral_id_of",
    "sbst_request",
    "sender_task",
    "travelling_copy",
]

# Links into the sender's own record that mean nothing to the receiver and would drag half the
# record along (the $apply CarePlan, encounters, the patient's other carers, endpoints).
_STAYS_HOME: dict[str, frozenset[str]] = {
    "*": frozenset({"meta", "encounter"}),
    "ServiceRequest": frozenset({"basedOn", "replaces", "insurance", "relevantHistory", "locationReference"}),
    "Task": frozenset({"basedOn", "partOf", "encounter", "insurance", "relevantHistory", "location"}),
    "Patient": frozenset({"generalPractitioner", "managingOrganization", "link"}),
    "Organization": frozenset({"endpoint", "partOf"}),
    "PractitionerRole": frozenset({"endpoint", "location", "healthcareService"}),
    "HealthcareService": frozenset({"endpoint", "location", "coverageArea", "providedBy"}),
    "QuestionnaireResponse": frozenset({"basedOn", "partOf"}),
    "Observation": frozenset({"basedOn", "partOf", "specimen", "device"}),
}


# In replies the request is named, not re-sent: the clinical payload travelled with the referral.
_NOT_REPEATED = frozenset({"supportingInfo", "reasonReference", "note"})


def travelling_copy(resource: dict[str, Any], *, reply: bool = False) -> dict[str, Any]:
    """The copy of a stored resource that goes into a message; in a reply a ServiceRequest goes
    without its clinical payload and a Task names its request by the referral id."""
    kind = resource["resourceType"]
    dropped = _STAYS_HOME["*"] | _STAYS_HOME.get(kind, frozenset())
    if reply and kind == "ServiceRequest":
        dropped |= _NOT_REPEATED
    copy = {k: v for k, v in resource.items() if k not in dropped}
    if reply and kind == "Task" and referral_id_of(resource):
        copy["focus"] = {"type": "ServiceRequest", "identifier": _referral_identifier(str(referral_id_of(resource)))}
    return copy


def referral_id_of(resource: dict[str, Any]) -> str | None:
    """The referral id (identifier with the REFERRAL_ID system) of a ServiceRequest or Task."""
    for identifier in resource.get("identifier") or []:
        if isinstance(identifier, dict) and identifier.get("system") == codes.REFERRAL_ID and identifier.get("value"):
            return str(identifier["value"])
    return None


def business_status(code: str) -> dict[str, Any]:
    return {"coding": [{"system": codes.STATUS, "code": code}], "text": code.replace("-", " ")}


def _referral_identifier(referral_id: str) -> dict[str, str]:
    return {"system": codes.REFERRAL_ID, "value": referral_id}


_TASK_CODE = {"coding": [{"system": codes.SNOMED, "code": codes.PATIENT_REFERRAL, "display": "Patient referral"}]}


def sender_task(request: dict[str, Any], task_id: str, referral_id: str, owner: str, authored: str) -> dict[str, Any]:
    """The sender's tracking Task for an activated referral ServiceRequest (status `requested`)."""
    task: dict[str, Any] = {
        "resourceType": "Task",
        "id": task_id,
        "identifier": [_referral_identifier(referral_id)],
        "status": "requested",
        "businessStatus": business_status("queued"),
        "intent": "order",
        "priority": request.get("priority", "routine"),
        "code": _TASK_CODE,
        "focus": {"reference": f"ServiceRequest/{request['id']}"},
        "for": request["subject"],
        "authoredOn": authored,
        "owner": {"reference": owner},
    }
    if request.get("requester"):
        task["requester"] = request["requester"]
    if request.get("occurrencePeriod"):
        task["restriction"] = {"period": request["occurrencePeriod"]}
    return task


def owner_task(
    task_id: str,
    referral_id: str,
    request: str,
    patient: str,
    requester: str | None,
    owner: str,
    priority: str,
    authored: str,
) -> dict[str, Any]:
    """The receiver's own Task for a referral it has received (status `received`)."""
    task: dict[str, Any] = {
        "resourceType": "Task",
        "id": task_id,
        "identifier": [_referral_identifier(referral_id)],
        "status": "received",
        "intent": "order",
        "priority": priority,
        "code": _TASK_CODE,
        "focus": {"reference": request},
        "for": {"reference": patient},
        "authoredOn": authored,
        "owner": {"reference": owner},
    }
    if requester:
        task["requester"] = {"reference": requester}
    return task


def has_sbst(resources: Iterable[dict[str, Any]]) -> bool:
    """Whether a STarT Back response or one of its score Observations is among `resources`."""
    for resource in resources:
        kind = resource.get("resourceType")
        if kind == "QuestionnaireResponse" and str(resource.get("questionnaire", "")).split("|")[0] == codes.SBST_QUESTIONNAIRE:
            return True
        if kind == "Observation":
            for coding in (resource.get("code") or {}).get("coding") or []:
                if coding.get("system") == codes.LOINC and coding.get("code") in codes.SBST_SCORES:
                    return True
    return False


def sbst_request(task_id: str, patient: str, request: str, requester: str, authored: str) -> dict[str, Any]:
    """A Task for the patient to complete the STarT Back questionnaire (`lbp-action` sbst-request):
    the pathway says the physiotherapist administers it when the GP sent none."""
    return {
        "resourceType": "Task",
        "id": task_id,
        "status": "requested",
        "intent": "order",
        "priority": "routine",
        "code": {"coding": [{"system": codes.LBP_ACTION, "code": "sbst-request"}], "text": "Complete the STarT Back questionnaire"},
        "focus": {"reference": "Questionnaire/start-back", "display": "STarT Back Screening Tool"},
        "basedOn": [{"reference": request}],
        "for": {"reference": patient},
        "authoredOn": authored,
        "requester": {"reference": requester},
        "owner": {"reference": patient},
        "input": [{"type": {"text": "questionnaire"}, "valueCanonical": codes.SBST_QUESTIONNAIRE}],
    }


@dataclass(frozen=True)
class Change:
    """One decision with its details, as applied to one side's copies. `decider` is whether this
    side made it (the forward differs: the forwarding receiver steps out, the sender follows)."""

    decision: Decision
    decider: bool
    reason: dict[str, Any] | None = None  # CodeableConcept: why (reject, request-information)
    priority: str | None = None
    owner: str | None = None  # forward: the new receiving organisation (a local reference)
    outputs: tuple[tuple[str, str], ...] = ()  # (kind, local reference): Appointment, report, forward
    note: str | None = None

    @classmethod
    def of(cls, code: str, decider: bool, **details: Any) -> Change:
        return cls(DECISIONS[code], decider, **details)


def decided_task(task: dict[str, Any], change: Change, now: str) -> list[dict[str, Any]]:
    """The successive versions of `task` the change leads to (one per status step, so every
    stored step is an edge of the state machine); 409 when the change is not possible now."""
    decision = change.decision
    if is_terminal(task["status"]):
        raise FhirError(ErrorCategory.CONFLICT, f"The referral Task is {task['status']}: no further decisions", ("Task.status",))
    target = decision.task_status
    if decision.code == "forward":
        target = "rejected" if change.decider else None
    fields: dict[str, Any] = {"lastModified": now}
    if decision.business_status:
        fields["businessStatus"] = business_status(decision.business_status)
    elif target is not None:
        fields["businessStatus"] = None
    if change.reason is not None:
        fields["statusReason"] = change.reason
    if change.priority is not None:
        fields["priority"] = change.priority
    if change.owner is not None and not change.decider:
        fields["owner"] = {"reference": change.owner}
    outputs = [*task.get("output", []), *({"type": {"text": kind}, "valueReference": {"reference": ref}} for kind, ref in change.outputs)]
    if change.outputs:
        fields["output"] = outputs
    if change.note:
        fields["note"] = [*task.get("note", []), {"time": now, "text": change.note}]
    steps = task_path(task["status"], target) if target is not None else []
    final = {k: v for k, v in {**task, **fields}.items() if v is not None}
    if not steps:
        return [final]
    return [{**task, "status": step, "lastModified": now} for step in steps[:-1]] + [{**final, "status": steps[-1]}]


def decided_request(request: dict[str, Any], change: Change) -> dict[str, Any] | None:
    """`request` after the change, or None when the change leaves it as it is."""
    decision = change.decision
    updated = dict(request)
    status = decision.request_status
    if decision.code == "forward":
        status = "revoked" if change.decider else None
        if not change.decider and change.owner is not None:
            updated["performer"] = [{"reference": change.owner}]
    if status is not None:
        updated["status"] = status
    if change.priority is not None:
        updated["priority"] = change.priority
    return updated if updated != request else None
