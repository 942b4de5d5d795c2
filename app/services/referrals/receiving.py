"""`POST /$process-message`: check a message, process it once, answer with the acknowledgement.

Spec: https://hl7.org/fhir/R4/messageheader-operation-process-message.html (synchronous: the
response is the acknowledgement message, HTTP 200 whatever its code). `ok`: processed and
stored, in one transaction with the inbox record; a duplicate (same MessageHeader id, same
content) gets the same acknowledgement again and is not processed again. `fatal-error`: the
message is wrong, nothing is stored, the OperationOutcome says why. `transient-error`: it cannot
be processed now (the referral it updates is not known here yet, the database is busy); the sender
retries with the same MessageHeader id.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.fhir.outcome import ErrorCategory, FhirError, Issue, operation_outcome
from app.referral.medcom import Party, acknowledgement
from app.referral.validation import Rejected, check_sender, content_hash, header_id_of, read_message
from app.security.access import TRUSTED, Access
from app.services.context import FhirContext
from app.services.referrals.config import ReferralConfig
from app.services.referrals.directory import Parties
from app.services.referrals.events import HANDLERS, NotYet, Receipt
from app.services.referrals.hooks import internal
from app.services.referrals.importing import refuse_unexpected
from app.services.stored import format_instant
from app.storage import outbox
from app.storage.engine import DatabaseError
from app.storage.repository import StoreSession

__all__ = ["process_message"]


async def process_message(
    context: FhirContext, config: ReferralConfig, parties: Parties, body: Any, access: Access = TRUSTED
) -> dict[str, Any]:
    """The acknowledgement Bundle for the message `body` (400 when it has no MessageHeader id). With
    authentication on, the caller's client must be the one bound to the sending partner's address
    (`BACKPATH_PARTNER_CLIENTS`): a partner's token never lets it send as another partner."""
    found_us, partners = await parties.get(context)
    us = found_us or _UNCONFIGURED(config)
    try:
        message = read_message(body, config.identifiers, config.endpoint, config.max_entries)
        check_sender(message, {address: partner.ties for address, partner in partners.items()})
    except Rejected as rejected:
        return _answer(context, us, body, "fatal-error", rejected.issues, _sender_copy(context, body))
    partner = partners[message.source_endpoint.rstrip("/")]
    assert partner.organization is not None  # check_sender matched its identifiers
    to = Party(partner.organization, message.source_endpoint)
    bound = config.partner_clients.get(message.source_endpoint.rstrip("/"))
    if not access.unrestricted and (bound is None or bound != access.client_id):
        forged = f"The access token's client may not send as {message.source_endpoint} (BACKPATH_PARTNER_CLIENTS)"
        return _answer(context, us, body, "fatal-error", [Issue("error", "security", forged, ("MessageHeader.source.endpoint",))], to)
    digest = content_hash(body)

    async def process(session: StoreSession) -> dict[str, Any]:
        await session.lock(f"message:{message.id}")
        earlier = await outbox.processed(session, message.id)
        if earlier is not None:
            if earlier.content_hash != digest:
                raise Rejected([Issue("error", "duplicate", f"MessageHeader id {message.id} was already used for another message", ("MessageHeader.id",))])
            answer: dict[str, Any] = orjson.loads(earlier.ack)
            return answer
        refuse_unexpected(list(message.entries.items()))
        exchange = await HANDLERS[message.event](Receipt(session, internal(context), us, to, message))
        ack = _answer(context, us, body, "ok", [], to)
        record = outbox.InboxRecord(message.id, exchange, message.source_endpoint, digest, context.clock(), orjson.dumps(body), orjson.dumps(ack))
        await outbox.record_processed(session, record)
        return ack

    try:
        return await context.store.rehearsed(process)
    except Rejected as rejected:
        return _answer(context, us, body, "fatal-error", rejected.issues, to)
    except NotYet as waiting:
        return _answer(context, us, body, "transient-error", [Issue("error", "transient", str(waiting))], to)
    except outbox.DuplicateMessage:
        async with context.store.reading() as session:
            earlier = await outbox.processed(session, message.id)
        if earlier is None:
            return _answer(context, us, body, "transient-error", [Issue("error", "transient", "Processed concurrently; send again")], to)
        again: dict[str, Any] = orjson.loads(earlier.ack)
        return again
    except FhirError as error:
        if error.category is ErrorCategory.CONFLICT:  # a concurrent change of the same record
            return _answer(context, us, body, "transient-error", error.issues, to)
        return _answer(context, us, body, "fatal-error", error.issues, to)
    except DatabaseError:
        return _answer(context, us, body, "transient-error", [Issue("error", "transient", "The database cannot take the message now")], to)


def _UNCONFIGURED(config: ReferralConfig) -> Party:
    """Who answers while this server has no messaging identity: the sender learns it and retries."""
    return Party({"resourceType": "Organization", "id": "unconfigured", "name": "BackPath (no messaging identity)"}, config.endpoint or "urn:backpath:unconfigured")


def _answer(context: FhirContext, us: Party, body: Any, code: str, issues: list[Issue], to: Party | None) -> dict[str, Any]:
    header_id = header_id_of(body)
    if header_id is None:  # read_message raised 400 before anything else could happen
        raise FhirError(ErrorCategory.MALFORMED, "The message has no MessageHeader id")
    outcome = operation_outcome(issues) if issues else None
    return acknowledgement(context.new_id(), header_id, code, us, format_instant(context.clock()), to, outcome)


def _sender_copy(context: FhirContext, body: Any) -> Party | None:
    """For a refused message: the sender as the message describes it (under a fresh id, so it
    cannot collide with a record of ours), at the source endpoint it names."""
    entries: list[dict[str, Any]] = [e["resource"] for e in body.get("entry", []) if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    header = entries[0] if entries and entries[0].get("resourceType") == "MessageHeader" else None
    if header is None:
        return None
    endpoint = (header.get("source") or {}).get("endpoint")
    sender_ref = str((header.get("sender") or {}).get("reference", ""))
    sender = next((r for r in entries if r.get("resourceType") == "Organization" and sender_ref.endswith(f"Organization/{r.get('id')}")), None)
    if not isinstance(endpoint, str) or sender is None:
        return None
    copy: dict[str, Any] = {"resourceType": "Organization", "id": context.new_id(), "name": str(sender.get("name", ""))}
    if isinstance(sender.get("identifier"), list):
        copy["identifier"] = [i for i in sender["identifier"] if isinstance(i, dict)]
    return Party(copy, endpoint)
