"""The report back to the referrer, as a Composition: HASP-structured (the core first — the answer
to the question, the advice, whom to involve, the follow-up for the GP — background after).

Spec: https://hl7.org/fhir/R4/composition.html; `../shared/referral-standards.md` §3 (HASP, the
Nictiz ELZ skeleton). NL: type is the local `document-type#teleconsult-answer` (ZorgDomein's own
code for the answer document is not verified). DK: LOINC 18842-5 Discharge summary (the
"epikrise"). The subsections of the answer use the local `hasp-section` codes.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from app.referral import codes

__all__ = ["ReportContent", "report_composition", "text_block"]


def text_block(text: str) -> dict[str, str]:
    """A generated Narrative holding `text` (escaped; paragraphs on blank lines)."""
    paragraphs = "".join(f"<p>{html.escape(p.strip())}</p>" for p in text.split("\n\n") if p.strip())
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{paragraphs or "<p/>"}</div>'}


@dataclass(frozen=True)
class ReportContent:
    """What the receiving clinician writes back (every part free text; empty parts are left out)."""

    findings: str
    advice: str = ""
    involve: str = ""  # which care provider or organisation to involve
    follow_up: str = ""  # what the GP is to do next
    question: str = ""  # the referrer's question, repeated as background
    entries: tuple[str, ...] = ()  # references to findings (e.g. an SBST response) in the answer


_PARTS = (
    ("findings", "Findings"),
    ("advice", "Advice"),
    ("involve", "Care provider to involve"),
    ("follow_up", "Follow-up for the general practitioner"),
)


def report_composition(
    composition_id: str,
    country: str,
    referral_id: str,
    patient: str,
    author: str,
    custodian: str,
    date: str,
    content: ReportContent,
) -> dict[str, Any]:
    """The report Composition (status final) for the exchange `referral_id`."""
    answer: list[dict[str, Any]] = []
    for field_name, title in _PARTS:
        text = getattr(content, field_name)
        if text:
            code = field_name.replace("_", "-")
            answer.append({"title": title, "code": _coded(codes.HASP_SECTION, code), "text": text_block(text)})
    answer_section: dict[str, Any] = {
        "title": "Antwoord op uw vraag",
        "code": _coded(codes.SNOMED, codes.NL_SECTION["answer"]),
        "section": answer,
    }
    if content.entries:
        answer_section["entry"] = [{"reference": reference} for reference in content.entries]
    sections = [answer_section]
    if content.question:
        sections.append(
            {
                "title": "Background: the question asked",
                "code": _coded(codes.SNOMED, codes.NL_SECTION["question"]),
                "text": text_block(content.question),
            }
        )
    if country == "NL":
        kind = {"coding": [{"system": codes.DOCUMENT_TYPE, "code": "teleconsult-answer", "display": "Teleconsult answer"}]}
        title = "Meekijkconsult Fysiotherapie: report"
    else:
        kind = {"coding": [{"system": codes.LOINC, "code": codes.DISCHARGE_SUMMARY, "display": "Discharge summary"}]}
        title = "Discharge report"
    return {
        "resourceType": "Composition",
        "id": composition_id,
        "identifier": {"system": codes.REFERRAL_ID, "value": referral_id},
        "status": "final",
        "type": kind,
        "subject": {"reference": patient},
        "date": date,
        "author": [{"reference": author}],
        "title": title,
        "custodian": {"reference": custodian},
        "section": sections,
    }


def _coded(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}

