"""Referral decisions as operations on the referral Task.

Receiver (the Task's owner): `$accept` (with an Appointment), `$reject` (with a reason), `$forward`
(to another organisation), `$change-priority`, `$request-information` (on-hold), `$report` (the
report back, which completes the Task). Sender (the requester): `$cancel`, `$supply-information`.
Each moves this side's Task (through legal steps of the state machine) and ServiceRequest, and
queues the message that moves the other side's copies, in one transaction. Body: a Parameters
resource (or none); the answer is the Task as it now stands.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.fhir.models import validate_resource
from app.fhir.outcome import ErrorCategory, FhirError
from app.referral.medcom import Party
from app.referral.payload import Change, decided_request, decided_task, referral_id_of
from app.referral.reports import ReportContent, report_composition
from app.referral.workflow import DECISIONS
from app.referral.zorgdomein import cancellation_composition, document_bundle
from app.services import resources
from app.services.context import FhirContext
from app.services.operations import Operation, OperationCall, OperationResult
from app.services.referrals.config import ReferralConfig
from app.services.referrals.directory import Route, gather, load, own_party, route_to
from app.services.referrals.hooks import internal
from app.services.referrals.importing import refuse_unexpected
from app.services.referrals.outgoing import new_referral
from app.services.referrals.sending import Outgoing, last_message, send
from app.services.stored import format_instant
from app.storage.repository import StoreSession

__all__ = ["decision_operations"]

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
        resource_id = resource.get("id") or self.context.new_id()
        result = await resources.create_in(self.session, self.context, resource["resourceType"], resource, resource_id=resource_id)
        stored: dict[str, Any] = orjson.loads(result.stored.content or b"{}")
        self.created.append(stored)
        return f"{resource['resourceType']}/{resource_id}"


def _parameters(body: Any) -> dict[str, list[dict[str, Any]]]:
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


_DETAILS: dict[str, Callable[[Decided], Awaitable[None]]] = {
    "accept": _accept,
    "reject": _reject,
    "forward": _forward,
    "change-priority": _change_priority,
    "request-information": _request_information,
    "supply-information": _supply_information,
    "report": _report,
    "cancel": _cancel,
}


# ---------------------------------------------------------------- the use case


async def decide(context: FhirContext, config: ReferralConfig, call: OperationCall, code: str) -> OperationResult:
    """Make the decision `code` on the referral Task `call.resource_id` (see the module docstring)."""
    assert call.resource_id is not None  # instance-level only
    parameters = _parameters(call.body)
    decision = DECISIONS[code]
    async with context.store.writing() as session:
        writer = internal(context)
        task: dict[str, Any] = orjson.loads((await resources.read_in(session, "Task", call.resource_id)).content or b"{}")
        referral_id = referral_id_of(task)
        if referral_id is None:
            raise FhirError(ErrorCategory.INVALID_RESOURCE, f"Task/{task['id']} does not track a referral")
        us = await own_party(session, context, config)
        we_own = (task.get("owner") or {}).get("reference") == us.reference
        if (decision.by == "owner") != we_own:
            who = "the receiving organisation (the Task's owner)" if decision.by == "owner" else "the referring organisation"
            raise FhirError(ErrorCategory.CONFLICT, f"Only {who} can {code} this referral", ("Task.owner",))
        request = await load(session, str((task.get("focus") or {}).get("reference", "")))
        if request is None:
            raise FhirError(ErrorCategory.INVALID_RESOURCE, "The referral Task's focus ServiceRequest is not stored here", ("Task.focus",))
        other = (task.get("requester") if we_own else task.get("owner")) or {}
        route = await route_to(session, context, str(other.get("reference", "")))
        if route is None or route.party.endpoint not in config.partners:
            raise FhirError(ErrorCategory.INVALID_RESOURCE, f"{other.get('reference')} has no messaging Endpoint among the configured partners")
        decided = Decided(session, writer, config, us, task, request, parameters, format_instant(context.clock()))
        await _DETAILS[code](decided)
        supporting = decided.details.pop("supporting", [])
        new_owner = decided.details.pop("new_owner", None)
        change = Change.of(code, decider=True, **decided.details)
        final = task
        for version in decided_task(task, change, decided.now):
            final = orjson.loads((await resources.update_in(session, writer, "Task", task["id"], version)).stored.content or b"{}")
        updated = decided_request(request, change)
        if supporting:
            updated = {**(updated or request), "supportingInfo": [*request.get("supportingInfo", []), *({"reference": r} for r in supporting)]}
        if updated is not None:
            await resources.update_in(session, writer, "ServiceRequest", request["id"], updated)
        reply_task = {**final, "owner": {"reference": new_owner}} if new_owner else final
        outgoing = await _reply(decided, route, code, referral_id, reply_task)
        await send(session, context, config, us, outgoing)
        if decided.forward_to is not None:
            received = await last_message(session, referral_id, "received")
            forwarded = next(r for r in decided.created if r["resourceType"] == "ServiceRequest")
            onward, _ = await new_referral(
                session, context, us, decided.forward_to, forwarded, None, referral_id,
                activity="forward-message", previous=(received.message_id, "revision") if received else None,
            )
            await send(session, context, config, us, onward)
    return OperationResult(final)


async def _reply(decided: Decided, route: Route, code: str, referral_id: str, task: dict[str, Any]) -> Outgoing:
    """The message telling the other side: this side's Task (naming the request by referral id),
    what the decision made (Appointment, report, alternative request) and what was supplied."""
    session = decided.session
    if code == "cancel":
        first = await last_message(session, referral_id, "sent", first=True)
        previous = (first.message_id, "removal") if first else None
    else:
        received = await last_message(session, referral_id, "received")
        previous = (received.message_id, "revision") if received else None
    documented = route.country == "NL" and code in ("report", "cancel")
    # Only what this decision produced travels: earlier outputs are already on the other side.
    made = {f"{r['resourceType']}/{r['id']}" for r in decided.created}
    outputs = [o for o in task.get("output", []) if (o.get("valueReference") or {}).get("reference") in made and not documented]
    seeds = [{**{k: v for k, v in task.items() if k != "output"}, **({"output": outputs} if outputs else {})}, *decided.supplied]
    if not documented:
        seeds += decided.created
    payload, _ = await gather(session, seeds, reply=True)
    focus = [f"Task/{task['id']}"]
    if documented:
        document = await _document(decided, route, code, referral_id)
        payload.append(document)
        focus.append(f"Bundle/{document['id']}")
    decision = DECISIONS[code]
    return Outgoing(
        exchange=referral_id,
        task_id=task["id"],
        event=decision.event,
        to=route.party,
        payload=payload,
        focus=tuple(focus),
        activity=decision.activity if code != "forward" else "reply-message",
        previous=previous,
        decision=code,
        medcom=route.country == "DK",
    )


async def _document(decided: Decided, route: Route, code: str, referral_id: str) -> dict[str, Any]:
    """The ZorgDomein-style document of an NL report or cancellation, with everything it references."""
    if code == "report":
        composition = next(r for r in decided.created if r["resourceType"] == "Composition")
    else:
        reason = (decided.details.get("reason") or {}).get("text", "")
        composition = cancellation_composition(
            decided.context.new_id(), referral_id, decided.task["for"]["reference"], decided.us.reference, decided.us.reference, decided.now, reason
        )
    resources_, _ = await gather(decided.session, [composition], reply=True)
    return document_bundle(decided.context.new_id(), decided.us.endpoint, decided.now, resources_[0], [*resources_[1:], decided.us.organization])


def decision_operations(config: ReferralConfig) -> list[Operation]:
    """One instance-level operation on Task per decision."""

    def handler(code: str) -> Callable[[FhirContext, OperationCall], Awaitable[OperationResult]]:
        async def run(context: FhirContext, call: OperationCall) -> OperationResult:
            return await decide(context, config, call, code)

        return run

    return [
        Operation(
            code=code,
            definition=f"http://backpath.dev/fhir/OperationDefinition/Task-{code}",
            resource_types=frozenset({"Task"}),
            type_level=False,
            instance_level=True,
            system_level=False,
            affects_state=True,
            handler=handler(code),
            documentation=f"Referral decision '{code}' ({DECISIONS[code].by}): moves both sides' Task and ServiceRequest.",
        )
        for code in DECISIONS
    ]

