"""CDS Hooks feedback: stored, so it can be counted (accepted vs overridden, override reasons).
Spec: https://cds-hooks.hl7.org/2.0/#feedback
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.cds.feedback import parse_feedback
from app.services.cds import require_service
from app.services.context import FhirContext
from app.storage.cds import FeedbackRow, count_feedback, insert_feedback

__all__ = ["FeedbackSummary", "feedback_summary", "receive_feedback"]


async def receive_feedback(context: FhirContext, service_id: str, body: Any, client: str | None) -> dict[str, Any]:
    """`POST /cds-services/{id}/feedback`: every entry stored once (a repeated report is a duplicate)."""
    require_service(service_id)
    received = context.clock()
    rows = [
        FeedbackRow(
            service_id=service_id,
            card=entry.card,
            outcome=entry.outcome,
            outcome_timestamp=entry.outcome_timestamp,
            accepted_suggestions=entry.accepted_suggestions,
            reason_system=entry.reason_system,
            reason_code=entry.reason_code,
            reason_display=entry.reason_display,
            user_comment=entry.user_comment,
            client=client,
            received=received,
        )
        for entry in parse_feedback(body)
    ]
    async with context.store.writing() as session:
        stored = await insert_feedback(session, rows)
    return {"stored": stored, "duplicates": len(rows) - stored}


@dataclass(frozen=True)
class FeedbackSummary:
    accepted: int = 0
    overridden: int = 0
    override_reasons: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (system, code) → count


async def feedback_summary(context: FhirContext, service_id: str) -> FeedbackSummary:
    """How the cards of a service fared: accepted, overridden, and the override reasons given."""
    async with context.store.reading() as session:
        counts = await count_feedback(session, service_id)
    reasons: dict[tuple[str, str], int] = {}
    for (outcome, system, code), n in counts.items():
        if outcome == "overridden" and system and code:
            reasons[system, code] = reasons.get((system, code), 0) + n
    return FeedbackSummary(
        accepted=sum(n for (outcome, _, _), n in counts.items() if outcome == "accepted"),
        overridden=sum(n for (outcome, _, _), n in counts.items() if outcome == "overridden"),
        override_reasons=reasons,
    )
