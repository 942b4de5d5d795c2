"""What each kind of message does here: a new referral creates this side's records and Task;
an update or cancellation moves this side's Task and ServiceRequest the way the other side decided.

The handlers run inside the transaction of `$process-message`; `Rejected` refuses the message
(`fatal-error`), `NotYet` defers it (`transient-error`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from app.fhir.outcome import Issue
from app.referral import codes
from app.referral.medcom import Party
from app.referral.payload import (
    Change,
    decided_request,
    decided_task,
    has_sbst,
    owner_task,
    referral_id_of,
    sbst_request,
)
from app.referral.references import bundle_target
from app.referral.validation import Message, Rejected, identifiers_of
from app.referral.workflow import DECISIONS
from app.services import resources
from app.services.context import FhirContext
from app.services.referrals.directory import find_by_identifiers, load
from app.services.referrals.importing import import_entries, refuse_unexpected
from app.services.stored import format_instant
from app.storage import outbox
from app.storage.repository import StoreSession

__all__ = ["HANDLERS", "NotYet", "Receipt"]


class NotYet(Exception):
    """The message is fine but cannot be processed now: `transient-error`, the sender retries."""


@dataclass(frozen=True)
class Receipt:
    session: StoreSession
    context: FhirContext  # the internal one: state machine on, activation off
    us: Party
    sender: Party  # our record of the sending partner
    message: Message

    def known_parties(self) -> dict[str, str]:
        """fullUrl → local reference for the message's sender and receiver Organizations: they
        are the partner and us, already stored here."""
        known = {}
        header = self.message.header
        sender_url = self.message.url_of(header["sender"]["reference"])
        if sender_url:
            known[sender_url] = self.sender.reference
        for destination in header.get("destination", []):
            receiver = self.message.resolve(str((destination.get("receiver") or {}).get("reference", "")))
            url = self.message.url_of(str((destination.get("receiver") or {}).get("reference", "")))
            if url and receiver is not None and identifiers_of(receiver) & identifiers_of(self.us.organization):
                known[url] = self.us.reference
        return known


async def _new_referral(receipt: Receipt) -> str:
    message = receipt.message
    focus = message.focus()
    if len(focus) != 1 or focus[0]["resourceType"] not in ("ServiceRequest", "Bundle"):
        raise Rejected([Issue("error", "invalid", "A new-referral message has one focus: the ServiceRequest (DK) or the request document (NL)", ("MessageHeader.focus",))])
    if focus[0]["resourceType"] == "ServiceRequest":
        entries = list(message.entries.items())
        request_url = next(url for url, r in entries if r is focus[0])
        referral_id = referral_id_of(focus[0])
        document = None
    else:
        document = focus[0]
        entries, referral_id = _document_entries(document, "request")
        request_url = next((url for url, r in entries if r["resourceType"] == "ServiceRequest"), "")
    if not referral_id or not request_url:
        raise Rejected([Issue("error", "required", "The referral needs its ServiceRequest and its referral id", ("MessageHeader.focus",))])
    refuse_unexpected(entries)
    if message.role == "cc":  # an informational copy: kept as it came, no work item here
        await resources.create_in(receipt.session, receipt.context, "Bundle", message.body, resource_id=receipt.context.new_id())
        return referral_id
    if await outbox.exchange_known(receipt.session, referral_id):
        raise Rejected([Issue("error", "duplicate", f"The referral {referral_id} was already received", ("MessageHeader.focus",))])
    request = dict(entries)[request_url]
    subject = _resolve(entries, request.get("subject"), request_url)
    if subject is None or subject[1]["resourceType"] != "Patient":
        raise Rejected([Issue("error", "invalid", "ServiceRequest.subject must be a Patient in the message", ("ServiceRequest.subject",))])

    def adjust(url: str, resource: dict[str, Any]) -> dict[str, Any]:
        # Our copy of the request is open until we decide (the NL emitted copy says `completed`).
        return {**resource, "status": "active", "intent": "order"} if url == request_url else resource

    local = await import_entries(receipt.session, receipt.context, entries, known=receipt.known_parties(), adjust=adjust)
    if document is not None:
        await resources.create_in(receipt.session, receipt.context, "Bundle", document, resource_id=receipt.context.new_id())
    requester = _resolve(entries, request.get("requester"), request_url)
    sent_task = next((r for r in message.of_type("Task")), {})
    context = receipt.context
    task = owner_task(
        task_id=context.new_id(),
        referral_id=referral_id,
        request=local[request_url],
        patient=local[subject[0]],
        requester=local.get(requester[0]) if requester else None,
        owner=receipt.us.reference,
        priority=request.get("priority", "routine"),
        authored=sent_task.get("authoredOn") or request.get("authoredOn") or format_instant(context.clock()),
    )
    if document is not None and not has_sbst(r for _, r in entries):
        # The pathway: without an SBST from the GP, the physiotherapist administers it.
        sbst = sbst_request(context.new_id(), local[subject[0]], local[request_url], receipt.us.reference, task["authoredOn"])
        await resources.create_in(receipt.session, context, "Task", sbst, resource_id=sbst["id"])
        task["businessStatus"] = {"coding": [{"system": codes.STATUS, "code": "sbst-requested"}], "text": "sbst requested"}
    await resources.create_in(receipt.session, context, "Task", task, resource_id=task["id"])
    return referral_id


def _document_entries(document: dict[str, Any], kind: str) -> tuple[list[tuple[str, dict[str, Any]]], str | None]:
    """The entries of a ZorgDomein-style document and its exchange number."""
    entries = [(e["fullUrl"], e["resource"]) for e in document.get("entry", [])]
    if document.get("type") != "document" or not entries or entries[0][1]["resourceType"] != "Composition":
        raise Rejected([Issue("error", "invalid", f"The {kind} must be a document Bundle with its Composition first", ("MessageHeader.focus",))])
    identifier = entries[0][1].get("identifier") or {}
    referral_id = identifier.get("value") if identifier.get("system") == codes.REFERRAL_ID else None
    return entries, referral_id


def _resolve(entries: list[tuple[str, dict[str, Any]]], reference: Any, from_url: str) -> tuple[str, dict[str, Any]] | None:
    if not isinstance(reference, dict) or not isinstance(reference.get("reference"), str):
        return None
    urls = frozenset(url for url, _ in entries)
    found = bundle_target(reference["reference"], from_url, urls)
    return (found, dict(entries)[found]) if found else None


async def _referral_update(receipt: Receipt) -> str:
    message, session, context = receipt.message, receipt.session, receipt.context
    code = "cancel" if message.event == "cancel-referral" else message.reason
    if code is None or code not in DECISIONS or (code == "cancel") != (message.event == "cancel-referral"):
        raise Rejected([Issue("error", "invalid", f"An {message.event} message needs a known decision in MessageHeader.reason", ("MessageHeader.reason",))])
    decision = DECISIONS[code]
    entries = list(message.entries.items())
    remote = next(((url, r) for url, r in entries if r["resourceType"] == "Task"), None)
    documents = [r for _, r in entries if r["resourceType"] == "Bundle"]
    document_entries: list[tuple[str, dict[str, Any]]] = []
    referral_id = referral_id_of(remote[1]) if remote else None
    for document in documents:
        inner, document_referral = _document_entries(document, "document")
        document_entries += inner
        referral_id = referral_id or document_referral
    if not referral_id:
        raise Rejected([Issue("error", "required", "The message names no referral (Task identifier or document exchange number)", ("MessageHeader.focus",))])
    refuse_unexpected([*entries, *document_entries])
    found = await find_by_identifiers(session, context, "Task", {(codes.REFERRAL_ID, referral_id)})
    if found is None:
        raise NotYet(f"The referral {referral_id} is not known here (yet)")
    local_task: dict[str, Any] = found
    we_own = (local_task.get("owner") or {}).get("reference") == receipt.us.reference
    if (decision.by == "owner") == we_own:
        raise Rejected([Issue("error", "forbidden", f"'{code}' is not the sender's decision to make on this referral", ("MessageHeader.reason",))])
    party = local_task.get("owner") if decision.by == "owner" else local_task.get("requester")
    if not identifiers_of(message.sender) & await _organization_ties(session, (party or {}).get("reference")):
        raise NotYet(f"The sender is not (or not yet) the {decision.by} of the referral {referral_id}")
    # The patient is the one of our Task, whatever the message calls it.
    patient = local_task["for"]["reference"]
    subject = _resolve(entries, remote[1].get("for"), remote[0]) if remote else None
    known = receipt.known_parties()
    if subject:
        known[subject[0]] = patient
    local = await import_entries(session, context, entries, known=known)
    document_patients = {url: patient for url, r in document_entries if r["resourceType"] == "Patient"}
    local.update(await import_entries(session, context, document_entries, known=document_patients))
    change = _change(message, decision.code, remote, local, documents, document_entries)
    now = format_instant(context.clock())
    for version in decided_task(local_task, change, now):
        await resources.update_in(session, context, "Task", local_task["id"], version)
    request_ref = (local_task.get("focus") or {}).get("reference")
    request = await load(session, request_ref) if isinstance(request_ref, str) else None
    if request is not None:
        updated = decided_request(request, change)
        if code == "supply-information":
            supplied = [{"reference": ref} for ref in local.values() if ref.split("/")[0] not in ("Patient", "Organization", "Practitioner", "PractitionerRole")]
            updated = {**(updated or request), "supportingInfo": [*request.get("supportingInfo", []), *supplied]}
        if updated is not None:
            await resources.update_in(session, context, "ServiceRequest", request["id"], updated)
    return referral_id


def _change(
    message: Message,
    code: str,
    remote: tuple[str, dict[str, Any]] | None,
    local: dict[str, str],
    documents: list[dict[str, Any]],
    document_entries: list[tuple[str, dict[str, Any]]],
) -> Change:
    task = remote[1] if remote else {}
    url = remote[0] if remote else message.header_url
    outputs: list[tuple[str, str]] = []
    for output in task.get("output", []):
        target = message.resolve(str((output.get("valueReference") or {}).get("reference", "")), url)
        target_url = next((u for u, r in message.entries.items() if r is target), None)
        if target_url in local:
            outputs.append(((output.get("type") or {}).get("text", "output"), local[target_url]))
    if documents and code == "report":
        composition_url = document_entries[0][0]
        outputs = [o for o in outputs if not o[1].startswith("Bundle/")] + [("report", local[composition_url])]
    owner = None
    if code == "forward":
        target = message.resolve(str((task.get("owner") or {}).get("reference", "")), url)
        owner_url = next((u for u, r in message.entries.items() if r is target), None)
        owner = local.get(owner_url) if owner_url else None
        if owner is None:
            raise Rejected([Issue("error", "required", "A forward names the new owner organisation in Task.owner", ("Task.owner",))])
    notes = [n.get("text") for n in task.get("note", []) if isinstance(n, dict) and n.get("text")]
    return Change.of(
        code,
        decider=False,
        reason=task.get("statusReason"),
        priority=task.get("priority") if code == "change-priority" else None,
        owner=owner,
        outputs=tuple(outputs),
        note=notes[-1] if notes and code in ("request-information", "supply-information") else None,
    )


async def _organization_ties(session: StoreSession, reference: Any) -> frozenset[tuple[str, str]]:
    organization = await _organization_of(session, reference)
    return identifiers_of(organization)


async def _organization_of(session: StoreSession, reference: Any) -> dict[str, Any] | None:
    """The Organization behind a reference to an Organization or a PractitionerRole."""
    resource = await load(session, reference) if isinstance(reference, str) else None
    if resource is not None and resource["resourceType"] == "PractitionerRole":
        owner = (resource.get("organization") or {}).get("reference")
        resource = await load(session, owner) if isinstance(owner, str) else None
    return resource if resource is not None and resource["resourceType"] == "Organization" else None


HANDLERS: dict[str, Callable[[Receipt], Awaitable[str]]] = {
    "new-referral": _new_referral,
    "update-referral": _referral_update,
    "cancel-referral": _referral_update,
}
