"""Every referral of a patient with its Task's status and the steps its messages brought (sent,
acknowledged, accepted, report received), read from the Task's versions: each status step of a
referral Task is a version of its own (see `app/referral/payload.py`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.referral import codes

__all__ = ["ReferralRow", "ReferralStep", "referral_rows"]

# What a Task status means for the referrer, step by step.
_STEP = {
    "draft": "drafted",
    "requested": "sent",
    "received": "acknowledged",
    "accepted": "accepted",
    "on-hold": "information requested",
    "in-progress": "in progress",
    "completed": "completed",
    "rejected": "rejected",
    "cancelled": "cancelled",
    "failed": "failed",
}


@dataclass(frozen=True)
class ReferralStep:
    when: str
    label: str


@dataclass(frozen=True)
class ReferralRow:
    task_id: str
    what: str
    to: str
    status: str
    business_status: str | None
    steps: tuple[ReferralStep, ...]
    referral_id: str | None


def referral_rows(
    tasks: Sequence[Mapping[str, Any]],
    versions: Mapping[str, Sequence[Mapping[str, Any]]],
    requests: Mapping[str, Mapping[str, Any]],
    displays: Mapping[str, str],
) -> tuple[ReferralRow, ...]:
    """Rows for the Tasks that track a ServiceRequest (their `focus`), newest first. `versions`
    holds each Task's versions oldest first; `displays` names referenced organisations."""
    rows = []
    for task in sorted(tasks, key=lambda t: str(t.get("authoredOn") or ""), reverse=True):
        focus = str((task.get("focus") or {}).get("reference") or "")
        if not focus.startswith("ServiceRequest/"):
            continue
        request = requests.get(focus, {})
        owner = str((task.get("owner") or {}).get("reference") or "")
        performer = str(((request.get("performer") or [{}])[0]).get("reference") or "")
        rows.append(
            ReferralRow(
                task_id=str(task.get("id")),
                what=_concept_text(request.get("code")) or "Referral",
                to=displays.get(owner) or displays.get(performer) or owner or performer,
                status=str(task.get("status")),
                business_status=_business_status(task),
                steps=_steps(versions.get(str(task.get("id")), [task])),
                referral_id=next((str(i.get("value")) for i in task.get("identifier") or [] if i.get("system") == codes.REFERRAL_ID), None),
            )
        )
    return tuple(rows)


def _steps(versions: Sequence[Mapping[str, Any]]) -> tuple[ReferralStep, ...]:
    steps: list[ReferralStep] = []
    for version in versions:
        label = _STEP.get(str(version.get("status")), str(version.get("status")))
        if label == "sent" and _business_status(version) == "queued":
            label = "queued"
        if label == "completed" and any("Composition/" in str((o.get("valueReference") or {}).get("reference")) for o in version.get("output") or []):
            label = "report received"
        if _business_status(version) == "delivery-failed":
            label = "delivery failed"
        if not steps or steps[-1].label != label:
            when = str((version.get("meta") or {}).get("lastUpdated") or version.get("lastModified") or version.get("authoredOn") or "")
            steps.append(ReferralStep(when[:16].replace("T", " "), label))
    return tuple(steps)


def _business_status(task: Mapping[str, Any]) -> str | None:
    for coding in (task.get("businessStatus") or {}).get("coding") or []:
        if coding.get("system") == codes.STATUS:
            return str(coding.get("code"))
    return None


def _concept_text(concept: Any) -> str:
    if not isinstance(concept, Mapping):
        return ""
    return str(concept.get("text") or next((c.get("display") or c.get("code") for c in concept.get("coding") or []), ""))
