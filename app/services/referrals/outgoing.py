"""The new-referral message for a ServiceRequest, in the shape of its receiver's channel:
DK (MedCom) a message focused on the ServiceRequest with its tracking Task and every referenced
record; NL (ZorgDomein-style) a message whose focus is the Meekijkconsult request document."""

from __future__ import annotations

from typing import Any

from app.fhir.outcome import Issue
from app.referral import codes
from app.referral.medcom import Party
from app.referral.payload import has_sbst
from app.referral.zorgdomein import RequestContent, document_bundle, request_composition
from app.security.access import TRUSTED, Access
from app.services.context import FhirContext
from app.services.referrals.directory import Route, gather, readable_by
from app.services.referrals.sending import Outgoing
from app.services.stored import format_instant
from app.storage.repository import StoreSession

__all__ = ["new_referral"]

# The referral cannot travel without who it is for, who asks and who is asked.
_REQUIRED = ((0, "subject"), (0, "requester"), (0, "performer"))


async def new_referral(
    session: StoreSession,
    context: FhirContext,
    us: Party,
    route: Route,
    request: dict[str, Any],
    task: dict[str, Any] | None,
    referral_id: str,
    *,
    activity: str = "new-message",
    previous: tuple[str, str] | None = None,
    access: Access = TRUSTED,
) -> tuple[Outgoing, list[Issue]]:
    """The Outgoing new-referral for `request` (and the sender's `task`, DK) to `route`, with only
    what `access` may read."""
    seeds = [request, task] if task is not None and route.country == "DK" else [request]
    resources, warnings = await gather(session, seeds, reply=False, required=_REQUIRED, readable=readable_by(context, access))
    if route.country == "DK":
        payload, focus = resources, f"ServiceRequest/{request['id']}"
    else:
        document = _request_document(context, us, request, resources, referral_id)
        payload, focus = [document], f"Bundle/{document['id']}"
    outgoing = Outgoing(
        exchange=referral_id,
        task_id=task["id"] if task else None,
        event="new-referral",
        to=route.party,
        payload=payload,
        focus=(focus,),
        activity=activity,
        previous=previous,
        medcom=route.country == "DK",
    )
    return outgoing, warnings


def _request_document(context: FhirContext, us: Party, request: dict[str, Any], resources: list[dict[str, Any]], referral_id: str) -> dict[str, Any]:
    now = format_instant(context.clock())
    emitted = []
    for resource in resources:
        if resource["resourceType"] == "ServiceRequest" and resource["id"] == request["id"]:
            resource = _elz_request(resource)
        emitted.append(resource)
    supporting = [r["reference"] for r in request.get("supportingInfo", []) if isinstance(r, dict) and "reference" in r]
    supporting = [s for s in supporting if any(f"{r['resourceType']}/{r['id']}" == s for r in resources)]
    composition = request_composition(
        composition_id=context.new_id(),
        referral_id=referral_id,
        patient=request["subject"]["reference"],
        author=request["requester"]["reference"],
        custodian=us.reference,
        date=now,
        request=f"ServiceRequest/{request['id']}",
        supporting=supporting,
        content=_request_content(request, [r for r in resources if f"{r['resourceType']}/{r['id']}" in supporting]),
    )
    return document_bundle(context.new_id(), us.endpoint, now, composition, [*emitted, us.organization])


def _elz_request(request: dict[str, Any]) -> dict[str, Any]:
    """The emitted copy in the Nictiz ELZ shape: category NHG Table 69 code 1 (referral letter),
    and `completed` — ELZ marks the sent ServiceRequest done; the exchange lives on in the Task."""
    category = {"coding": [{"system": codes.NHG_TABLE_69, "code": "1", "display": "Verwijsbrief"}]}
    categories = [c for c in request.get("category", []) if c != category]
    return {**request, "status": "completed", "category": [category, *categories]}


def _request_content(request: dict[str, Any], supporting: list[dict[str, Any]]) -> RequestContent:
    reasons = [c.get("text") or ", ".join(filter(None, (x.get("display") or x.get("code") for x in c.get("coding", [])))) for c in request.get("reasonCode", [])]
    notes = [n.get("text", "") for n in request.get("note", []) if n.get("text")]
    code = request.get("code") or {}
    question = "\n\n".join(notes) or code.get("text") or "Meekijkconsult Fysiotherapie"
    scores = [_score_text(r) for r in supporting if r["resourceType"] == "Observation"]
    further = "STarT Back: " + "; ".join(s for s in scores if s) if has_sbst(supporting) and any(scores) else ""
    return RequestContent(reason="; ".join(r for r in reasons if r) or "See the question.", question=question, further=further)


def _score_text(observation: dict[str, Any]) -> str:
    coding: dict[str, Any] = next(iter((observation.get("code") or {}).get("coding", [])), {})
    label = coding.get("display") or coding.get("code", "")
    if "valueInteger" in observation:
        return f"{label} {observation['valueInteger']}"
    value = observation.get("valueCodeableConcept") or {}
    answer: dict[str, Any] = next(iter(value.get("coding", [])), {})
    return f"{label} {answer.get('display') or answer.get('code', '')}".strip()
