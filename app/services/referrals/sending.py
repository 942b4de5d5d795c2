"""Composing a message of an exchange and putting it in the outbox, inside the caller's transaction.

Every message carries the Provenance of each earlier message of the exchange (taken from the
latest one sent or received) plus its own, so the receiver sees the whole history (MedCom).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from app.referral import codes
from app.referral.medcom import Envelope, Party, message_bundle, provenance
from app.referral.validation import identifiers_of
from app.services.context import FhirContext
from app.services.referrals.config import ReferralConfig
from app.services.stored import format_instant
from app.storage import outbox
from app.storage.repository import StoreSession

__all__ = ["Outgoing", "history", "last_message", "send"]


@dataclass(frozen=True)
class Outgoing:
    """One message to send: its event, the decision it carries, its payload and its place in the
    exchange's history (`previous`: the MessageHeader id it answers, forwards or retracts)."""

    exchange: str
    task_id: str | None
    event: str
    to: Party
    payload: Sequence[dict[str, Any]]
    focus: tuple[str, ...]
    activity: str = "new-message"
    previous: tuple[str, str] | None = None  # (MessageHeader id, "revision" | "removal")
    decision: str | None = None
    medcom: bool = True
    cc: tuple[Party, ...] = ()


async def last_message(session: StoreSession, exchange: str, direction: str | None = None, first: bool = False) -> outbox.LoggedMessage | None:
    """The latest (or first) message of the exchange, optionally only those sent or received."""
    log = [m for m in await outbox.exchange_log(session, exchange) if direction is None or m.direction == direction]
    if not log:
        return None
    return log[0] if first else log[-1]


async def history(session: StoreSession, exchange: str) -> list[dict[str, Any]]:
    """The Provenances of the exchange so far, as the latest message carried them."""
    latest = await last_message(session, exchange)
    if latest is None:
        return []
    entries = orjson.loads(latest.payload).get("entry", [])
    return [e["resource"] for e in entries if e.get("resource", {}).get("resourceType") == "Provenance"]


def _repoint(provenances: Sequence[dict[str, Any]], organizations: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Point each earlier Provenance's agent at this message's copy of that organisation (matched
    by identifier), or leave only the identifier when the organisation is not in the message."""
    repointed = []
    for earlier in provenances:
        agents = []
        for agent in earlier.get("agent", []):
            who = dict(agent.get("who") or {})
            identifier = who.get("identifier") or {}
            tie = (identifier.get("system"), identifier.get("value"))
            match = next((o for o in organizations if tie in identifiers_of(o)), None)
            if match is not None:
                who["reference"] = f"Organization/{match['id']}"
            else:
                who.pop("reference", None)
            agents.append({**agent, "who": who})
        repointed.append({k: v for k, v in {**earlier, "agent": agents}.items() if k != "meta"})
    return repointed


async def send(session: StoreSession, context: FhirContext, config: ReferralConfig, us: Party, message: Outgoing) -> str:
    """Build the message, queue it for its destination (and each cc), return its MessageHeader id."""
    now = context.clock()
    stamp = format_instant(now)
    message_id = context.new_id()
    organizations = [us.organization, message.to.organization, *(p.organization for p in message.cc)]
    organizations += [r for r in message.payload if r["resourceType"] == "Organization"]
    earlier = _repoint(await history(session, message.exchange), organizations)
    own = provenance(context.new_id(), message_id, message.activity, us, stamp, message.previous)
    envelope = Envelope(
        message_id=message_id,
        event={"system": codes.MESSAGE_EVENT, "code": message.event},
        sender=us,
        primary=message.to,
        timestamp=stamp,
        focus=message.focus,
        cc=message.cc,
        definition=f"{codes.MESSAGE_DEFINITION}{message.event}",
        reason={"system": codes.DECISION, "code": message.decision} if message.decision else None,
        medcom=message.medcom,
    )
    payload = orjson.dumps(message_bundle(envelope, message.payload, [*earlier, own]))
    for party in (message.to, *message.cc):
        await outbox.enqueue(session, outbox.OutboxMessage(message_id, message.exchange, message.task_id, party.endpoint, payload), now)
    return message_id
