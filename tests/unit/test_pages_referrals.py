"""Referral rows of the clinician view: the Task's versions become the steps its messages brought."""

from __future__ import annotations

from typing import Any

from app.pages import referral_rows
from app.referral import codes


def _version(status: str, when: str, business: str | None = None, **more: Any) -> dict[str, Any]:
    version: dict[str, Any] = {"resourceType": "Task", "id": "t1", "status": status, "meta": {"lastUpdated": when}, **more}
    if business:
        version["businessStatus"] = {"coding": [{"system": codes.STATUS, "code": business}]}
    return version


def test_each_status_step_is_a_message_step_and_a_report_is_named() -> None:
    versions = [
        _version("requested", "2026-03-01T09:00:00Z", "queued"),
        _version("requested", "2026-03-01T09:00:01Z", "delivered"),
        _version("received", "2026-03-01T09:00:02Z"),
        _version("accepted", "2026-03-02T10:00:00Z"),
        _version("in-progress", "2026-03-09T10:00:00Z"),
        _version("completed", "2026-03-09T11:00:00Z", output=[{"valueReference": {"reference": "Composition/r1"}}]),
    ]
    task = {**versions[-1], "focus": {"reference": "ServiceRequest/s1"}, "owner": {"reference": "Organization/o1"},
            "identifier": [{"system": codes.REFERRAL_ID, "value": "ref-1"}]}
    [row] = referral_rows([task], {"t1": versions}, {"ServiceRequest/s1": {"code": {"text": "Spine centre"}}}, {"Organization/o1": "Rygheden"})
    assert (row.what, row.to, row.status, row.referral_id) == ("Spine centre", "Rygheden", "completed", "ref-1")
    assert [s.label for s in row.steps] == ["queued", "sent", "acknowledged", "accepted", "in progress", "report received"]
    assert row.steps[0].when == "2026-03-01 09:00"


def test_tasks_that_track_no_service_request_are_not_referrals() -> None:
    assert referral_rows([{"resourceType": "Task", "id": "t2", "status": "requested", "focus": {"reference": "Questionnaire/start-back"}}], {}, {}, {}) == ()
