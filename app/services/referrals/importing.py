"""Taking the records of a received message into the local store.

The sender's ids mean nothing here: every record gets a local id and its references are rewritten
to them. Organizations, Patients and Practitioners are matched by identifier (GLN/SOR/AGB/URA,
CPR/BSN, UZI/AGB/BIG) to the local ones, which are never overwritten by a message. Only the kinds
of record a referral carries are accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from app.fhir.outcome import Issue
from app.referral.payload import travelling_copy
from app.referral.references import bundle_target, rewrite_references
from app.referral.validation import Rejected, identifiers_of
from app.services import resources
from app.services.context import FhirContext
from app.services.referrals.directory import find_by_identifiers
from app.storage.repository import StoreSession

__all__ = ["ENVELOPE", "import_entries", "refuse_unexpected"]

# Parts of the message itself, read but never stored as they are.
ENVELOPE = frozenset({"MessageHeader", "Provenance", "OperationOutcome", "Task", "Bundle"})
_ACCEPTED = frozenset(
    {
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "ServiceRequest",
        "QuestionnaireResponse",
        "Observation",
        "Condition",
        "Composition",
        "Appointment",
        "DocumentReference",
        "Procedure",
        "MedicationStatement",
        "AllergyIntolerance",
    }
)
_MATCHED = frozenset({"Organization", "Patient", "Practitioner"})

Adjust = Callable[[str, dict[str, Any]], dict[str, Any]]


def refuse_unexpected(entries: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """A resource a referral does not carry (a SearchParameter, an Endpoint, …) refuses the message."""
    unexpected = sorted({r["resourceType"] for _, r in entries if r["resourceType"] not in _ACCEPTED | ENVELOPE})
    if unexpected:
        raise Rejected([Issue("error", "not-supported", f"A referral message does not carry {', '.join(unexpected)}", ("Bundle.entry",))])


async def import_entries(
    session: StoreSession,
    context: FhirContext,
    entries: Sequence[tuple[str, dict[str, Any]]],
    *,
    known: Mapping[str, str] | None = None,
    adjust: Adjust | None = None,
) -> dict[str, str]:
    """Store the records among `entries` (fullUrl, resource) and return fullUrl → local `Type/id`.

    `known` maps fullUrls already standing for local records (e.g. the patient of a Task this side
    keeps); `adjust(fullUrl, resource)` may amend a record just before it is stored.
    """
    refuse_unexpected(entries)
    local: dict[str, str] = dict(known or {})
    created: list[tuple[str, dict[str, Any]]] = []
    for url, resource in entries:
        kind = resource["resourceType"]
        if kind in ENVELOPE or url in local:
            continue
        ties = identifiers_of(resource)
        match = await find_by_identifiers(session, context, kind, ties) if kind in _MATCHED and ties else None
        if match is not None:
            local[url] = f"{kind}/{match['id']}"
            continue
        local[url] = f"{kind}/{context.new_id()}"
        created.append((url, resource))
    urls = frozenset(url for url, _ in entries)
    for url, resource in created:
        kind, new_id = local[url].split("/")

        def target(reference: str, at: str = url) -> str | None:
            if reference.startswith("#"):
                return reference
            found = bundle_target(reference, at, urls)
            return local.get(found) if found else None

        body = rewrite_references({**travelling_copy(resource), "id": new_id}, target)
        if adjust is not None:
            body = adjust(url, body)
        await resources.create_in(session, context, kind, body, resource_id=new_id)
    return local
