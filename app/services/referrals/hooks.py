"""The write hooks of the referral flow.

- Every Task write follows the Task state machine (an illegal status change is 409).
- A referral Task (one with a referral id) changes status, owner or priority only through the
  decision operations (`Task/{id}/$accept` …), because a decision must travel to the other side
  with its details; a plain update that tries is 409 naming the operations.
- Activating a ServiceRequest — it becomes `active` with intent `order`, whether an EHR posts it
  so or turns an `$apply` proposal into an order — whose performer has a messaging Endpoint
  creates its tracking Task (`requested`) and queues the new-referral message, in the same
  transaction.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson

from app.fhir.outcome import ErrorCategory, FhirError, Issue
from app.referral import codes
from app.referral.medcom import Party
from app.referral.payload import referral_id_of, sender_task
from app.referral.workflow import check_task_transition
from app.security.access import Access
from app.services import resources
from app.services.context import FhirContext, HookResult, WriteHook
from app.services.referrals.config import ReferralConfig
from app.services.referrals.directory import find_by_identifiers, own_party, route_to
from app.services.referrals.outgoing import new_referral
from app.services.referrals.sending import send
from app.services.stored import format_instant
from app.storage.repository import StoredVersion, StoreSession

__all__ = ["activate_referral", "activation_hook", "check_task_status", "guard_referral_task", "internal"]

_DECIDED = ("status", "owner", "priority", "statusReason", "output")
_OPERATIONS = "$accept, $reject, $forward, $change-priority, $request-information, $report (receiver) or $supply-information, $cancel (sender)"


async def check_task_status(
    _session: StoreSession, _context: FhirContext, resource: dict[str, Any], current: StoredVersion | None, _access: Access
) -> HookResult:
    """Any Task: a status change must be an edge of the state machine."""
    if current is not None and current.content:
        previous = orjson.loads(current.content)
        check_task_transition(previous.get("status"), resource.get("status", ""))
    return HookResult(resource)


def internal(context: FhirContext) -> FhirContext:
    """The context the referral services write with: the state machine still holds, but no other
    hook: not this module's activation and guard (the services are the ones making the decisions
    travel), and no local scoring of a partner's QuestionnaireResponses (they are kept as sent)."""
    return replace(context, write_hooks={"Task": (check_task_status,)})


async def guard_referral_task(
    session: StoreSession, context: FhirContext, resource: dict[str, Any], current: StoredVersion | None, access: Access
) -> HookResult:
    """Plain writes may not make a referral decision behind the other side's back."""
    result = await check_task_status(session, context, resource, current, access)
    if current is None or not current.content or referral_id_of(resource) is None:
        return result
    previous = orjson.loads(current.content)
    changed = [name for name in _DECIDED if previous.get(name) != resource.get(name)]
    if changed:
        raise FhirError(
            ErrorCategory.CONFLICT,
            f"Task/{resource['id']} tracks a referral with another organisation; change its {', '.join(changed)} with {_OPERATIONS}",
            (f"Task.{changed[0]}",),
        )
    return result


def _activates(resource: dict[str, Any], current: StoredVersion | None) -> bool:
    if resource.get("status") != "active" or resource.get("intent") != "order":
        return False
    if current is None or not current.content:
        return True
    previous = orjson.loads(current.content)
    return not (previous.get("status") == "active" and previous.get("intent") == "order")


def activation_hook(config: ReferralConfig) -> WriteHook:
    async def hook(
        session: StoreSession, context: FhirContext, resource: dict[str, Any], current: StoredVersion | None, access: Access
    ) -> HookResult:
        return await activate_referral(session, context, config, resource, current, access)

    return hook


async def activate_referral(
    session: StoreSession,
    context: FhirContext,
    config: ReferralConfig,
    request: dict[str, Any],
    current: StoredVersion | None,
    access: Access,
) -> HookResult:
    """Turn an activated referral ServiceRequest into a tracking Task and a queued message; what
    travels with it must be readable with the writer's `access`."""
    if not _activates(request, current):
        return HookResult(request)
    performer = next((p.get("reference") for p in request.get("performer", []) if isinstance(p, dict)), None)
    route = await route_to(session, context, performer) if isinstance(performer, str) else None
    if route is None:
        note = "The performer has no messaging Endpoint: the referral is stored but not sent"
        return HookResult(request, (Issue("information", "informational", note),))
    if route.party.endpoint not in config.partners:
        raise FhirError(
            ErrorCategory.INVALID_RESOURCE,
            f"The performer's Endpoint {route.party.endpoint} is not a configured partner (BACKPATH_PARTNER_ENDPOINTS)",
            ("ServiceRequest.performer",),
        )
    us = await own_party(session, context, config)
    referral_id = referral_id_of(request) or context.new_id()
    if await find_by_identifiers(session, context, "Task", {(codes.REFERRAL_ID, referral_id)}) is not None:
        return HookResult(request)  # already activated once: its Task carries on
    if referral_id_of(request) is None:
        request = {**request, "identifier": [*request.get("identifier", []), {"system": codes.REFERRAL_ID, "value": referral_id}]}
    task = sender_task(request, context.new_id(), referral_id, route.party.reference, format_instant(context.clock()))
    writer = internal(context)
    await resources.create_in(session, writer, "Task", task, resource_id=task["id"])
    outgoing, warnings = await new_referral(session, context, us, route, request, task, referral_id, access=access)
    cc = tuple(party for party in [await _cc_party(session, context, reference, config) for reference in config.cc] if party is not None)
    await send(session, context, config, us, replace(outgoing, cc=cc))
    return HookResult(request, tuple(warnings))


async def _cc_party(session: StoreSession, context: FhirContext, reference: str, config: ReferralConfig) -> Party | None:
    route = await route_to(session, context, reference)
    return route.party if route is not None and route.party.endpoint in config.partners else None

