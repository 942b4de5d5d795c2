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
from typing import Any

import orjson

from app.fhir.outcome import ErrorCategory, FhirError
from app.referral.payload import Change, decided_request, decided_task, referral_id_of
from app.referral.workflow import DECISIONS
from app.referral.zorgdomein import cancellation_composition, document_bundle
from app.services import resources
from app.services.context import FhirContext
from app.services.operations import Operation, OperationCall, OperationResult
from app.services.referrals.config import ReferralConfig
from app.services.referrals.decision_details import DETAILS, Decided, parameters_of
from app.services.referrals.directory import Route, gather, load, own_party, readable_by, route_to
from app.services.referrals.hooks import internal
from app.services.referrals.outgoing import new_referral
from app.services.referrals.sending import Outgoing, last_message, send
from app.services.stored import format_instant

__all__ = ["decision_operations"]


async def decide(context: FhirContext, config: ReferralConfig, call: OperationCall, code: str) -> OperationResult:
    """Make the decision `code` on the referral Task `call.resource_id` (see the module docstring)."""
    assert call.resource_id is not None  # instance-level only
    parameters = parameters_of(call.body)
    decision = DECISIONS[code]
    async with context.store.writing() as session:
        writer = internal(context)
        task: dict[str, Any] = orjson.loads((await resources.read_in(session, "Task", call.resource_id)).content or b"{}")
        referral_id = referral_id_of(task)
        if referral_id is None:
            raise FhirError(ErrorCategory.INVALID_RESOURCE, f"Task/{task['id']} does not track a referral")
        if not isinstance((task.get("for") or {}).get("reference"), str):
            raise FhirError(ErrorCategory.INVALID_RESOURCE, f"Task/{task['id']} names no patient (Task.for)", ("Task.for",))
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
        readable = readable_by(context, call.access)
        decided = Decided(session, writer, config, us, task, request, parameters, format_instant(context.clock()), readable, call.access)
        await DETAILS[code](decided)
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
                activity="forward-message", previous=(received.message_id, "revision") if received else None, access=call.access,
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
    payload, _ = await gather(session, seeds, reply=True, readable=decided.readable)
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
    resources_, _ = await gather(decided.session, [composition], reply=True, readable=decided.readable)
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

