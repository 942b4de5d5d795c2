"""The Task state machine and the decision rules, as pure functions (referral-standards.md §1)."""

from __future__ import annotations

import pytest

from app.fhir.outcome import ErrorCategory, FhirError
from app.referral import codes
from app.referral.payload import (
    Change,
    business_status,
    decided_request,
    decided_task,
    has_sbst,
    travelling_copy,
)
from app.referral.workflow import DECISIONS, TASK_TRANSITIONS, check_task_transition, is_terminal, task_path

TASK = {
    "resourceType": "Task",
    "id": "t",
    "identifier": [{"system": codes.REFERRAL_ID, "value": "r-1"}],
    "status": "received",
    "intent": "order",
    "priority": "routine",
    "focus": {"reference": "ServiceRequest/s"},
    "for": {"reference": "Patient/p"},
    "owner": {"reference": "Organization/b"},
}
REQUEST = {"resourceType": "ServiceRequest", "id": "s", "status": "active", "intent": "order", "priority": "routine", "subject": {"reference": "Patient/p"}}


@pytest.mark.parametrize(("old", "new"), [("requested", "received"), ("received", "accepted"), ("accepted", "in-progress"), ("in-progress", "completed"), ("received", "on-hold"), ("on-hold", "received"), ("requested", "cancelled"), ("completed", "entered-in-error")])
def test_edges_of_the_state_machine_are_allowed(old: str, new: str) -> None:
    check_task_transition(old, new)


@pytest.mark.parametrize(("old", "new"), [("completed", "requested"), ("rejected", "accepted"), ("requested", "completed"), ("cancelled", "in-progress"), ("draft", "completed"), ("received", "requested")])
def test_other_status_changes_are_409(old: str, new: str) -> None:
    with pytest.raises(FhirError) as refused:
        check_task_transition(old, new)
    assert refused.value.category is ErrorCategory.CONFLICT and old in refused.value.diagnostics


def test_a_create_may_start_anywhere_and_keeping_a_status_is_no_change() -> None:
    check_task_transition(None, "completed")
    check_task_transition("completed", "completed")


def test_final_statuses_have_no_way_out() -> None:
    assert {s for s in TASK_TRANSITIONS if is_terminal(s)} == {"rejected", "cancelled", "failed", "completed", "entered-in-error"}


def test_a_path_walks_the_edges() -> None:
    assert task_path("accepted", "completed") == ["in-progress", "completed"]
    assert task_path("received", "received") == []
    with pytest.raises(FhirError):
        task_path("completed", "accepted")


def test_each_decision_belongs_to_one_side() -> None:
    owner = {code for code, d in DECISIONS.items() if d.by == "owner"}
    assert owner == {"accept", "reject", "forward", "change-priority", "request-information", "report"}
    assert {code for code, d in DECISIONS.items() if d.by == "requester"} == {"cancel", "supply-information"}
    assert DECISIONS["cancel"].event == "cancel-referral" and DECISIONS["cancel"].activity == "retract-message"


@pytest.mark.parametrize(
    ("code", "details", "task_status", "request_status"),
    [
        ("accept", {"outputs": (("appointment", "Appointment/a"),)}, "accepted", "completed"),
        ("reject", {"reason": {"text": "not indicated"}}, "rejected", "revoked"),
        ("request-information", {"reason": {"text": "MR?"}, "note": "MR?"}, "on-hold", "on-hold"),
        ("cancel", {}, "cancelled", "revoked"),
    ],
)
def test_a_decision_moves_both_sides_the_same_way(code: str, details: dict[str, object], task_status: str, request_status: str) -> None:
    for decider in (True, False):
        change = Change.of(code, decider, **details)  # type: ignore[arg-type]
        versions = decided_task(TASK, change, "2026-03-03T10:00:00.000Z")
        assert versions[-1]["status"] == task_status
        assert [v["status"] for v in versions] == task_path("received", task_status)
        assert (decided_request(REQUEST, change) or {})["status"] == request_status


def test_accept_keeps_the_appointment_as_output_and_reject_its_reason() -> None:
    accepted = decided_task(TASK, Change.of("accept", True, outputs=(("appointment", "Appointment/a"),)), "now")[-1]
    assert accepted["output"] == [{"type": {"text": "appointment"}, "valueReference": {"reference": "Appointment/a"}}]
    rejected = decided_task(TASK, Change.of("reject", False, reason={"text": "not indicated"}), "now")[-1]
    assert rejected["statusReason"] == {"text": "not indicated"}


def test_a_report_walks_from_accepted_through_in_progress_to_completed() -> None:
    accepted = {**TASK, "status": "accepted"}
    versions = decided_task(accepted, Change.of("report", False, outputs=(("report", "Composition/c"),)), "now")
    assert [v["status"] for v in versions] == ["in-progress", "completed"]
    assert versions[-1]["businessStatus"] == business_status("reported")
    assert "output" not in versions[0]


def test_forward_steps_the_forwarder_out_and_the_sender_follows_the_new_owner() -> None:
    change = Change.of("forward", True, outputs=(("forwarded", "ServiceRequest/alt"),), owner=None)
    forwarder = decided_task(TASK, change, "now")[-1]
    assert forwarder["status"] == "rejected" and forwarder["businessStatus"]["coding"][0]["code"] == "forwarded"
    assert decided_request(REQUEST, change) == {**REQUEST, "status": "revoked"}
    follow = Change.of("forward", False, owner="Organization/c", outputs=(("forwarded", "ServiceRequest/alt"),))
    sender = decided_task(TASK, follow, "now")[-1]
    assert sender["status"] == "received" and sender["owner"] == {"reference": "Organization/c"}
    assert (decided_request(REQUEST, follow) or {})["performer"] == [{"reference": "Organization/c"}]


def test_priority_changes_on_both_copies_and_a_closed_referral_takes_no_decision() -> None:
    change = Change.of("change-priority", False, priority="urgent")
    assert decided_task(TASK, change, "now")[-1]["priority"] == "urgent"
    assert (decided_request(REQUEST, change) or {})["priority"] == "urgent"
    with pytest.raises(FhirError) as refused:
        decided_task({**TASK, "status": "completed"}, change, "now")
    assert refused.value.category is ErrorCategory.CONFLICT


def test_the_sbst_is_recognised_by_questionnaire_or_score_codes() -> None:
    assert has_sbst([{"resourceType": "QuestionnaireResponse", "questionnaire": f"{codes.SBST_QUESTIONNAIRE}|1.0"}])
    assert has_sbst([{"resourceType": "Observation", "code": {"coding": [{"system": codes.LOINC, "code": "91352-5"}]}}])
    assert not has_sbst([{"resourceType": "Observation", "code": {"coding": [{"system": codes.LOINC, "code": "72514-3"}]}}])


def test_what_stays_home_and_what_a_reply_names_only() -> None:
    patient = {"resourceType": "Patient", "id": "p", "meta": {"versionId": "3"}, "generalPractitioner": [{"reference": "Practitioner/x"}], "birthDate": "1970-01-01"}
    assert travelling_copy(patient) == {"resourceType": "Patient", "id": "p", "birthDate": "1970-01-01"}
    request = {**REQUEST, "supportingInfo": [{"reference": "Observation/o"}], "basedOn": [{"reference": "CarePlan/c"}]}
    assert "basedOn" not in travelling_copy(request) and "supportingInfo" in travelling_copy(request)
    assert "supportingInfo" not in travelling_copy(request, reply=True)
    assert travelling_copy(TASK, reply=True)["focus"] == {"type": "ServiceRequest", "identifier": {"system": codes.REFERRAL_ID, "value": "r-1"}}
