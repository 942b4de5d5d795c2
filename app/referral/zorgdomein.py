"""ZorgDomein-style documents for the NL Meekijkconsult: the request form, the report back, the
cancellation — each a `document` Bundle, Composition first, every Composition reference inside.

Spec: https://hl7.org/fhir/R4/documents.html; ZorgDomein Integrator "HL7 FHIR documents" (Bundle.id
unique and never reused, the exchange number in Composition.identifier, the kind in
Composition.type); Nictiz ELZ 0.2.0-beta for the request's sections (`referral-standards.md` §3).
BackPath's exchange number is the referral id (local system). ZorgDomein's profiles are STU3; this
is the R4 shape with the same meaning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.referral import codes
from app.referral.medcom import full_url, with_narrative
from app.referral.reports import text_block

__all__ = ["RequestContent", "cancellation_composition", "document_bundle", "request_composition"]


@dataclass(frozen=True)
class RequestContent:
    """The teleconsult request form's texts: a clear question, a short summary, treatment so far."""

    reason: str
    question: str
    treatment: str = ""
    further: str = ""


def _section(key: str, title: str, text: str, entries: Sequence[str] = ()) -> dict[str, Any]:
    section: dict[str, Any] = {
        "title": title,
        "code": {"coding": [{"system": codes.SNOMED, "code": codes.NL_SECTION[key]}]},
        "text": text_block(text),
    }
    if entries:
        section["entry"] = [{"reference": reference} for reference in entries]
    return section


def request_composition(
    composition_id: str,
    referral_id: str,
    patient: str,
    author: str,
    custodian: str,
    date: str,
    request: str,
    supporting: Sequence[str],
    content: RequestContent,
) -> dict[str, Any]:
    """The Meekijkconsult request (teleconsult request form, ELZ referral note): the core section
    with reason, treatment so far, the question (the ServiceRequest) and further information (the
    SBST response and scores); the answer section stays empty until the report comes back."""
    core = [
        _section("reason", "Reason for the referral", content.reason),
        _section("treatment", "Treatment so far", content.treatment or "No treatment recorded."),
        _section("question", "Question to the physiotherapist", content.question, [request]),
        _section("further", "Further relevant information", content.further or "None.", supporting),
    ]
    answer = {
        "title": "Antwoord op uw vraag",
        "code": {"coding": [{"system": codes.SNOMED, "code": codes.NL_SECTION["answer"]}]},
        "text": text_block("Not answered yet."),
        "emptyReason": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/list-empty-reason", "code": "notstarted"}]},
    }
    return {
        "resourceType": "Composition",
        "id": composition_id,
        "identifier": {"system": codes.REFERRAL_ID, "value": referral_id},
        "status": "final",
        "type": {
            "coding": [
                {"system": codes.LOINC, "code": codes.REFERRAL_NOTE, "display": "Referral note"},
                {"system": codes.ZORGDOMEIN_DOCUMENT_TYPE, "code": "teleconsult-request-form"},
            ]
        },
        "subject": {"reference": patient},
        "date": date,
        "author": [{"reference": author}],
        "title": "Meekijkconsult Fysiotherapie",
        "custodian": {"reference": custodian},
        "section": [
            {"title": "Referral", "code": {"coding": [{"system": codes.SNOMED, "code": codes.NL_SECTION["core"]}]}, "section": core},
            answer,
        ],
    }


def cancellation_composition(
    composition_id: str, referral_id: str, patient: str, author: str, custodian: str, date: str, reason: str
) -> dict[str, Any]:
    """The cancellation document of the exchange (ZorgDomein document type `cancellation`)."""
    return {
        "resourceType": "Composition",
        "id": composition_id,
        "identifier": {"system": codes.REFERRAL_ID, "value": referral_id},
        "status": "final",
        "type": {"coding": [{"system": codes.ZORGDOMEIN_DOCUMENT_TYPE, "code": "cancellation"}]},
        "subject": {"reference": patient},
        "date": date,
        "author": [{"reference": author}],
        "title": "Cancellation of the Meekijkconsult request",
        "custodian": {"reference": custodian},
        "section": [{"title": "Reason for the cancellation", "text": text_block(reason or "Cancelled by the referrer.")}],
    }


def document_bundle(document_id: str, base: str, timestamp: str, composition: dict[str, Any], resources: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The document: Composition first, then each of `resources` once, with narrative. The caller
    passes everything the Composition references (directly or through them)."""
    unique: dict[tuple[str, str], dict[str, Any]] = {}
    for resource in (composition, *resources):
        unique.setdefault((resource["resourceType"], resource["id"]), resource)
    return {
        "resourceType": "Bundle",
        "id": document_id,
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{document_id}"},
        "type": "document",
        "timestamp": timestamp,
        "entry": [{"fullUrl": full_url(base, r), "resource": with_narrative(r)} for r in unique.values()],
    }

