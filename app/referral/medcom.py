"""FHIR message Bundles shaped like MedCom's: the envelope, the Provenance chain, acknowledgements.

Spec: https://hl7.org/fhir/R4/messaging.html; MedCom Messaging IG (medcomdk/dk-medcom-messaging)
and Acknowledgement IG; `../shared/referral-standards.md` §2. Pure: the service hands in the
resources to send (copies from its store, with their own ids) and gets the Bundle back.

Every entry's fullUrl is `{sender endpoint}/{type}/{id}`, so the relative references the copies
already hold resolve inside the Bundle by the Bundle rules. The NL channel uses the same envelope
without the MedCom destination-use extension.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.referral import codes
from app.referral.narrative import narrative

__all__ = [
    "Envelope",
    "Party",
    "acknowledgement",
    "full_url",
    "message_bundle",
    "provenance",
    "with_narrative",
]


@dataclass(frozen=True)
class Party:
    """An organisation in an exchange: its Organization (JSON with its id in the builder's store)
    and the address of its messaging endpoint."""

    organization: dict[str, Any]
    endpoint: str

    @property
    def reference(self) -> str:
        return f"Organization/{self.organization['id']}"


@dataclass(frozen=True)
class Envelope:
    """What the MessageHeader says: who sends what to whom, about which resources."""

    message_id: str
    event: dict[str, str]  # a Coding
    sender: Party
    primary: Party
    timestamp: str
    focus: tuple[str, ...] = ()  # relative references to payload resources
    cc: tuple[Party, ...] = ()
    definition: str | None = None
    reason: dict[str, str] | None = None  # a Coding: the decision this message carries
    medcom: bool = True


def full_url(base: str, resource: dict[str, Any]) -> str:
    return f"{base.rstrip('/')}/{resource['resourceType']}/{resource['id']}"


def with_narrative(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource with a generated narrative when it has none (MedCom requires one)."""
    if resource["resourceType"] in ("Bundle", "Binary", "Parameters") or resource.get("text"):
        return resource
    return {**resource, "text": narrative(resource)}


def message_bundle(envelope: Envelope, payload: Sequence[dict[str, Any]], provenances: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """The message Bundle: MessageHeader first, then the parties, the payload and the Provenances,
    each resource once, each with narrative."""
    header = _header(envelope)
    resources: dict[tuple[str, str], dict[str, Any]] = {}
    for resource in (header, envelope.sender.organization, envelope.primary.organization, *(p.organization for p in envelope.cc), *payload, *provenances):
        resources.setdefault((resource["resourceType"], resource["id"]), resource)
    base = envelope.sender.endpoint
    return {
        "resourceType": "Bundle",
        "id": envelope.message_id,
        "type": "message",
        "timestamp": envelope.timestamp,
        "entry": [{"fullUrl": full_url(base, r), "resource": with_narrative(r)} for r in resources.values()],
    }


def _header(envelope: Envelope) -> dict[str, Any]:
    destinations = [_destination(envelope.primary, "primary", envelope.medcom)]
    destinations += [_destination(party, "cc", envelope.medcom) for party in envelope.cc]
    header: dict[str, Any] = {
        "resourceType": "MessageHeader",
        "id": envelope.message_id,
        "eventCoding": envelope.event,
        "destination": destinations,
        "sender": {"reference": envelope.sender.reference},
        "source": {"endpoint": envelope.sender.endpoint},
    }
    if envelope.reason:
        header["reason"] = {"coding": [envelope.reason]}
    if envelope.focus:
        header["focus"] = [{"reference": reference} for reference in envelope.focus]
    if envelope.definition:
        header["definition"] = envelope.definition
    return header


def _destination(party: Party, use: str, medcom: bool) -> dict[str, Any]:
    destination: dict[str, Any] = {"endpoint": party.endpoint, "receiver": {"reference": party.reference}}
    if medcom:
        coding = {"system": codes.DESTINATION_USE, "code": use}
        destination = {"extension": [{"url": codes.DESTINATION_USE_EXTENSION, "valueCoding": coding}], **destination}
    return destination


def provenance(
    provenance_id: str,
    message_id: str,
    activity: str,
    agent: Party,
    occurred: str,
    previous: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The Provenance of one message: its target is the MessageHeader, the acting organisation is
    the agent, and for a reply, forward or cancellation `entity` names the previous MessageHeader
    with role `revision` or `removal` (MedComMessagingProvenance)."""
    who: dict[str, Any] = {"reference": agent.reference}
    identifiers = agent.organization.get("identifier") or []
    if identifiers:
        # Later messages of the exchange carry this Provenance on: the identifier lets each side
        # point `who` at its own copy of the organisation.
        who["identifier"] = {k: identifiers[0][k] for k in ("system", "value") if k in identifiers[0]}
    result: dict[str, Any] = {
        "resourceType": "Provenance",
        "id": provenance_id,
        "target": [{"reference": f"MessageHeader/{message_id}"}],
        "occurredDateTime": occurred,
        "recorded": occurred,
        "activity": {"coding": [{"system": codes.ACTIVITY, "code": activity}]},
        "agent": [{"who": who}],
    }
    if previous is not None:
        previous_id, role = previous
        result["entity"] = [{"role": role, "what": {"reference": f"MessageHeader/{previous_id}"}}]
    return result


def acknowledgement(
    ack_id: str,
    acknowledged_id: str,
    code: str,
    us: Party,
    timestamp: str,
    to: Party | None,
    outcome: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The acknowledgement message for `acknowledged_id`: `ok`, `transient-error` or `fatal-error`,
    with the OperationOutcome saying what was wrong on error (MedCom Acknowledgement IG)."""
    header: dict[str, Any] = {
        "resourceType": "MessageHeader",
        "id": ack_id,
        "eventCoding": {"system": codes.MEDCOM_EVENT, "code": codes.ACK_EVENT},
        "sender": {"reference": us.reference},
        "source": {"endpoint": us.endpoint},
        "response": {"identifier": acknowledged_id, "code": code},
    }
    resources = [header, us.organization]
    if to is not None:
        header["destination"] = [_destination(to, "primary", True)]
        resources.append(to.organization)
    if outcome is not None:
        details = {**outcome, "id": f"{ack_id}-outcome"}
        header["response"]["details"] = {"reference": f"OperationOutcome/{details['id']}"}
        resources.append(details)
    unique = {(r["resourceType"], r["id"]): r for r in resources}
    return {
        "resourceType": "Bundle",
        "id": ack_id,
        "type": "message",
        "timestamp": timestamp,
        "entry": [{"fullUrl": full_url(us.endpoint, r), "resource": with_narrative(r)} for r in unique.values()],
    }
