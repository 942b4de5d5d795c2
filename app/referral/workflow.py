"""The referral lifecycle: the FHIR Task state machine and what each decision does to both sides.

Spec: https://hl7.org/fhir/R4/task.html#statemachine and `../shared/referral-standards.md` §1.
One lifecycle for both countries. A decision is made by one side (the owner, i.e. the receiving
organisation, or the requester, i.e. the sender); it moves that side's Task and ServiceRequest and
travels as a message that moves the other side's copies the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from app.fhir.outcome import ErrorCategory, FhirError

__all__ = [
    "DECISIONS",
    "TASK_TRANSITIONS",
    "Decision",
    "Side",
    "check_task_transition",
    "is_terminal",
    "task_path",
]

# The FHIR Task state machine. Two edges beyond the spec's diagram, because the referral standard
# pauses an evaluation to ask for information: `received → on-hold` and, once the information is
# supplied, `on-hold → received`. `entered-in-error` is reachable from every status.
TASK_TRANSITIONS: Mapping[str, frozenset[str]] = {
    "draft": frozenset({"requested", "cancelled"}),
    "requested": frozenset({"received", "accepted", "rejected", "ready", "cancelled"}),
    "received": frozenset({"accepted", "rejected", "on-hold", "cancelled"}),
    "accepted": frozenset({"ready", "in-progress", "cancelled"}),
    "ready": frozenset({"in-progress", "cancelled"}),
    "in-progress": frozenset({"on-hold", "completed", "failed", "cancelled"}),
    "on-hold": frozenset({"received", "in-progress", "failed", "cancelled"}),
    "rejected": frozenset(),
    "cancelled": frozenset(),
    "failed": frozenset(),
    "completed": frozenset(),
    "entered-in-error": frozenset(),
}

Side = Literal["owner", "requester"]


def is_terminal(status: str) -> bool:
    return not TASK_TRANSITIONS.get(status)


def check_task_transition(old: str | None, new: str, where: str = "Task.status") -> None:
    """Refuse (409) a status change that is not an edge of the state machine; a create may start
    anywhere and keeping the status is always allowed."""
    if old is None or old == new or new == "entered-in-error":
        return
    if new not in TASK_TRANSITIONS.get(old, frozenset()):
        allowed = ", ".join(sorted(TASK_TRANSITIONS.get(old, ()))) or "none (it is final)"
        raise FhirError(
            ErrorCategory.CONFLICT,
            f"A Task cannot go from '{old}' to '{new}' (allowed from '{old}': {allowed})",
            (where,),
        )


def task_path(old: str, new: str) -> list[str]:
    """The statuses a Task passes through from `old` to `new`, shortest first-found path, `old`
    excluded: e.g. accepted → in-progress → completed. 409 when `new` cannot be reached."""
    if old == new:
        return []
    frontier: list[list[str]] = [[old]]
    seen = {old}
    while frontier:
        path = frontier.pop(0)
        for step in sorted(TASK_TRANSITIONS.get(path[-1], ())):
            if step == new:
                return [*path[1:], step]
            if step not in seen:
                seen.add(step)
                frontier.append([*path, step])
    check_task_transition(old, new)  # raises: not reachable means the direct edge is missing too
    return [new]


@dataclass(frozen=True)
class Decision:
    """One kind of decision (`referral-decision` code), who may make it, and where it leaves the
    Task and ServiceRequest of both sides (None: unchanged)."""

    code: str
    by: Side
    task_status: str | None
    request_status: str | None
    business_status: str | None
    event: str = "update-referral"
    activity: str = "reply-message"


DECISIONS: Mapping[str, Decision] = {
    d.code: d
    for d in (
        # The receiver books the patient: its Task is accepted and the request is fulfilled
        # ("accepted and booked", referral-standards §1).
        Decision("accept", "owner", "accepted", "completed", None),
        Decision("reject", "owner", "rejected", "revoked", None),
        # The receiver hands the referral on: the sender's Task and ServiceRequest follow the new
        # owner; the forwarding receiver's own Task ends `rejected` (it will not perform it).
        Decision("forward", "owner", None, None, "forwarded", activity="forward-message"),
        Decision("change-priority", "owner", None, None, "priority-changed"),
        Decision("request-information", "owner", "on-hold", "on-hold", "information-requested"),
        Decision("supply-information", "requester", "received", "active", "information-supplied"),
        Decision("report", "owner", "completed", "completed", "reported"),
        Decision("cancel", "requester", "cancelled", "revoked", None, event="cancel-referral", activity="retract-message"),
    )
}
