"""Feedback on cards, read and checked. Spec: https://cds-hooks.hl7.org/2.0/#feedback

Each entry names a card by its uuid, an outcome (`accepted` with the accepted suggestions, or
`overridden` with an optional reason), and when it happened (UTC). Broken entries refuse the whole
body (400), so nothing half-understood is counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from app.fhir.outcome import ErrorCategory, FhirError

__all__ = ["Feedback", "parse_feedback"]

_MAX_TEXT = 255


@dataclass(frozen=True)
class Feedback:
    card: str
    outcome: str  # accepted | overridden
    outcome_timestamp: datetime  # naive UTC
    accepted_suggestions: tuple[str, ...] = ()
    reason_system: str | None = None
    reason_code: str | None = None
    reason_display: str | None = None
    user_comment: str | None = None


def parse_feedback(body: Any) -> list[Feedback]:
    """The entries of a feedback POST body `{"feedback": [...]}`."""
    if not isinstance(body, dict) or not isinstance(body.get("feedback"), list) or not body["feedback"]:
        raise _bad("The body must be an object with a non-empty 'feedback' array", "feedback")
    return [_entry(entry, f"feedback[{n}]") for n, entry in enumerate(body["feedback"])]


def _entry(entry: Any, where: str) -> Feedback:
    if not isinstance(entry, dict):
        raise _bad(f"{where} must be an object", where)
    card = _short_text(entry.get("card"), f"{where}.card")
    outcome = entry.get("outcome")
    if outcome not in ("accepted", "overridden"):
        raise _bad(f"{where}.outcome must be 'accepted' or 'overridden'", f"{where}.outcome")
    accepted = entry.get("acceptedSuggestions")
    if outcome == "accepted" and not accepted:
        raise _bad(f"{where}: an accepted card needs acceptedSuggestions", f"{where}.acceptedSuggestions")
    if accepted is not None and (not isinstance(accepted, list) or not all(isinstance(s, dict) for s in accepted)):
        raise _bad(f"{where}.acceptedSuggestions must be a list of {{'id': ...}}", f"{where}.acceptedSuggestions")
    suggestions = tuple(_short_text(s.get("id"), f"{where}.acceptedSuggestions.id") for s in accepted or [])
    reason = entry.get("overrideReason")
    system = code = display = comment = None
    if reason is not None:
        if not isinstance(reason, dict) or (reason.get("reason") is None and reason.get("userComment") is None):
            raise _bad(f"{where}.overrideReason needs a reason, a userComment or both", f"{where}.overrideReason")
        if reason.get("reason") is not None:
            system, code, display = _coding(reason["reason"], f"{where}.overrideReason.reason")
        if reason.get("userComment") is not None:
            if not isinstance(reason["userComment"], str):
                raise _bad(f"{where}.overrideReason.userComment must be a string", f"{where}.overrideReason.userComment")
            comment = reason["userComment"][:4000]
    return Feedback(card, str(outcome), _timestamp(entry.get("outcomeTimestamp"), f"{where}.outcomeTimestamp"), suggestions, system, code, display, comment)


def _coding(value: Any, where: str) -> tuple[str, str, str | None]:
    if not isinstance(value, Mapping):
        raise _bad(f"{where} must be a Coding", where)
    display = value.get("display")
    return _short_text(value.get("system"), f"{where}.system"), _short_text(value.get("code"), f"{where}.code"), display if isinstance(display, str) else None


def _timestamp(value: Any, where: str) -> datetime:
    """An RFC 3339 date-time with an offset, as naive UTC."""
    if not isinstance(value, str):
        raise _bad(f"{where} is required (UTC date-time)", where)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise _bad(f"{where} is not an RFC 3339 date-time", where) from None
    if moment.tzinfo is None:
        raise _bad(f"{where} needs a time zone (UTC, e.g. 2021-12-11T10:05:31Z)", where)
    return moment.astimezone(UTC).replace(tzinfo=None)


def _short_text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        raise _bad(f"{where} is required (a string of at most {_MAX_TEXT} characters)", where)
    return value


def _bad(message: str, where: str) -> FhirError:
    return FhirError(ErrorCategory.INVALID_PARAMETER, message, (where,))
