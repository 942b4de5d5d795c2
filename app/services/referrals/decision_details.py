"""What each referral decision needs and makes: its parameters checked, the Appointment, the
report, the alternative request or the supplied records created here, and the Change fields."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.fhir.models import validate_resource
from app.fhir.outcome import ErrorCategory, FhirError
from app.referral.medcom import Party
from app.referral.payload import referral_id_of
from app.referral.reports import ReportContent, report_composition
from app.security.access import Access
from app.services import resources
from app.services.context import FhirContext
from app.services.referrals.config import ReferralConfig
from app.services.referrals.directory import Readable, Route, route_to
from app.services.referrals.importing import refuse_unexpected
from app.storage.repository import StoreSession

__all__ = ["DETAILS", "Decided", "parameters_of"]

_PRIORITIES = frozenset({"routine", "urgent", "asap", "stat"})


@dataclass
class Decided:
    """One decision being made: the Task and request it is about, its parameters, and what it adds."""

    session: StoreSession
    context: FhirContext  # internal: state machine on, hooks off
    config: ReferralConfig
    us: Party
    task: dict[str, Any]
    request: dict[str, Any]
    parameters: dict[str, list[dict[str, Any]]]
    now: str
    readable: Readable  # what the decider may read: only that travels
    access: Access  # the decider's: what the decision creates, the decider must be allowed to create
    details: dict[str, Any] = field(default_factory=dict)  # Change fields
    created: list[dict[str, Any]] = field(default_factory=list)  # resources the decision made here
    supplied: list[dict[str, Any]] = field(default_factory=list)
    forward_to: Route | None = None

    def text(self, name: str, required: bool = False) -> str:
        for parameter in self.parameters.get(name, []):
            if isinstance(parameter.get("valueString"), str) and parameter["valueString"].strip():
                return str(parameter["valueString"]).strip()
        if required:
            raise FhirError(ErrorCategory.INVALID_PARAMETER, f"The parameter '{name}' (valueString) is required", (f"Parameters.parameter[{name}]",))
        return ""

    async def create(self, resource: dict[str, Any]) -> str:
        resource_id = self.context.new_id()  # a caller's id never decides where a record lands here
        result = await resources.create_in(
            self.session, self.context, resource["resourceType"], resource, resource_id=resource_id, access=self.access
        )
        stored: dict[str, Any] = orjson.loads(result.stored.content or b"{}")
        self.created.append(stored)
        return f"{resource['resourceType']}/{resource_id}"


def parameters_of(body: Any) -> dict[str, list[dict[str, Any]]]:
    if body is None:
        return {}
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirError(ErrorCategory.MALFORMED, "A decision takes a Parameters resource (or no body)")
    validate_resource(body, "Parameters")
    found: dict[str, list[dict[str, Any]]] = {}
    for parameter in body.get("parameter", []):
        found.setdefault(str(parameter.get("name")), []).append(parameter)
    return found


def _reason(decided: Decided, name: str, required: bool) -> dict[str, Any] | None:
    for parameter in decided.parameters.get(name, []):
        if isinstance(parameter.get("valueCodeableConcept"), dict):
            concept: dict[str, Any] = parameter["valueCodeableConcept"]
            return concept
    text = decided.text(name, required)
    return {"text": text} if text else None


# ---------------------------------------------------------------- the details of each decision


async def _accept(decided: Decided) -> None:
    """An Appointment: the `appointment` resource given, or one booked from `start` (and `end`)."""
    given = next((p["resource"] for p in decided.parameters.get("appointment", []) if isinstance(p.get("resource"), dict)), None)
    if given is None:
        start = next((p.get("valueDateTime") for p in decided.parameters.get("start", [])), None)
        if not start:
            raise FhirError(ErrorCategory.INVALID_PARAMETER, "$accept needs an 'appointment' (Appointment) or a 'start' (valueDateTime)")
        end = next((p.get("valueDateTime") for p in decided.parameters.get("end", [])), None)
        given = {"resourceType": "Appointment", "status": "booked", "start": start, **({"end": end} if end else {})}
        description = decided.text("description")
        if description:
            given["description"] = description
    if given.get("resourceType") != "Appointment":
        raise FhirError(ErrorCategory.INVALID_PARAMETER, "'appointment' must be an Appointment")
    appointment = {
        **given,
        "basedOn": [{"reference": f"ServiceRequest/{decided.request['id']}"}],
        "participant": given.get("participant") or [{"actor": decided.task["for"], "status": "accepted"}],
    }
    decided.details["outputs"] = (("appointment", await decided.create(appointment)),)


async def _reject(decided: Decided) -> None:
    decided.details["reason"] = _reason(decided, "reason", required=True)


async def _forward(decided: Decided) -> None:
    target = next((p.get("valueReference", {}).get("reference") for p in decided.parameters.get("organization", [])), None)
    if not isinstance(target, str):
        raise FhirError(ErrorCategory.INVALID_PARAMETER, "$forward needs 'organization' (valueReference to a local Organization)")
    route = await route_to(decided.session, decided.context, target)
    if route is None or route.party.endpoint not in decided.config.partners:
        raise FhirError(ErrorCategory.INVALID_PARAMETER, f"{target} has no messaging Endpoint among the configured partners")
    alternative = {
        **{k: v for k, v in decided.request.items() if k not in ("id", "meta", "text")},
        "status": "active",
        "intent": "order",
        "performer": [{"reference": route.party.reference}],
        "replaces": [{"reference": f"ServiceRequest/{decided.request['id']}"}],
    }
    decided.details["reason"] = _reason(decided, "reason", required=False)
    decided.details["outputs"] = (("forwarded", await decided.create(alternative)),)
    decided.details["new_owner"] = route.party.reference
    decided.forward_to = route


async def _change_priority(decided: Decided) -> None:
    priority = next((p.get("valueCode") for p in decided.parameters.get("priority", [])), None)
    if priority not in _PRIORITIES:
        raise FhirError(ErrorCategory.INVALID_PARAMETER, f"'priority' (valueCode) must be one of {', '.join(sorted(_PRIORITIES))}")
    decided.details["priority"] = priority


async def _request_information(decided: Decided) -> None:
    question = decided.text("question", required=True)
    decided.details["reason"] = {"text": question}
    decided.details["note"] = question


async def _supply_information(decided: Decided) -> None:
    given = [p["resource"] for p in decided.parameters.get("resource", []) if isinstance(p.get("resource"), dict)]
    note = decided.text("note")
    if not given and not note:
        raise FhirError(ErrorCategory.INVALID_PARAMETER, "$supply-information needs a 'note' or at least one 'resource'")
    refuse_unexpected([("", r) for r in given])
    references = [await decided.create(resource) for resource in given]
    decided.supplied = list(decided.created)
    decided.created = []
    if note:
        decided.details["note"] = note
    decided.details["supporting"] = references


async def _report(decided: Decided) -> None:
    author = next((p.get("valueReference", {}).get("reference") for p in decided.parameters.get("author", [])), None)
    content = ReportContent(
        findings=decided.text("findings", required=True),
        advice=decided.text("advice"),
        involve=decided.text("involve"),
        follow_up=decided.text("followUp"),
        question="\n\n".join(n.get("text", "") for n in decided.request.get("note", [])),
        entries=tuple(p["valueReference"]["reference"] for p in decided.parameters.get("entry", []) if "reference" in p.get("valueReference", {})),
    )
    route = await route_to(decided.session, decided.context, decided.task["requester"]["reference"]) if decided.task.get("requester") else None
    composition = report_composition(
        composition_id=decided.context.new_id(),
        country=route.country if route else "DK",
        referral_id=str(referral_id_of(decided.task)),
        patient=decided.task["for"]["reference"],
        author=author if isinstance(author, str) else decided.us.reference,
        custodian=decided.us.reference,
        date=decided.now,
        content=content,
    )
    decided.details["outputs"] = (("report", await decided.create(composition)),)


async def _cancel(decided: Decided) -> None:
    decided.details["reason"] = _reason(decided, "reason", required=False)


DETAILS: dict[str, Callable[[Decided], Awaitable[None]]] = {
    "accept": _accept,
    "reject": _reject,
    "forward": _forward,
    "change-priority": _change_priority,
    "request-information": _request_information,
    "supply-information": _supply_information,
    "report": _report,
    "cancel": _cancel,
}
