"""The named inputs (facts), the operation parameters, and the small pure helpers of app/pathway."""

from __future__ import annotations

from datetime import date

import pytest

from app.fhir.outcome import ErrorCategory, FhirError
from app.pathway.expressions import split_terms
from app.pathway.facts import ASSESSMENT_FACTS, INPUT_NAMES, pathway_inputs
from app.pathway.parameters import data_resources, parse_apply_parameters
from app.pathway.paths import PathError, set_path
from app.pathway.timing import add_duration, due_elements
from app.pathway.translation import language_of, localized
from tests.factories import (
    assessment_response,
    collection,
    parameters,
    sbst_observation,
    scored_sbst_response,
)

SUBJECT = "Patient/p"
PATIENT = {"resourceType": "Patient", "id": "p", "birthDate": "1990-03-02"}
TODAY = date(2026, 3, 30)


def inputs(*resources: dict[str, object], patient: dict[str, object] | None = PATIENT, today: date = TODAY) -> dict[str, object]:
    return pathway_inputs(SUBJECT, patient, resources, today)


# --- facts -----------------------------------------------------------------------------------------


def test_every_contract_fact_is_defined_and_unknown_when_there_is_no_data() -> None:
    found = inputs()
    assert set(found) == set(INPUT_NAMES)
    assert all(found[name] == [] for name in ASSESSMENT_FACTS)
    assert found["sbst-risk"] == [] and found["t0"] == [] and found["age"] == 36


def test_assessment_answers_become_facts_by_link_id() -> None:
    found = inputs(assessment_response(SUBJECT, episode_start="2026-03-02", red_flag_paresis="none", mr_done=False, pain_duration_weeks=5))
    assert found["red-flag-paresis"] == "none"
    assert found["mr-done"] is False
    assert found["pain-duration-weeks"] == 5
    assert found["t0"] == "2026-03-02" and found["weeks-since-t0"] == 4 and found["days-since-t0"] == 28
    assert found["age-at-t0"] == 36
    assert found["course"] == []


def test_only_the_latest_assessment_counts_but_t0_may_come_from_an_earlier_one() -> None:
    first = assessment_response(SUBJECT, "2026-03-02", episode_start="2026-03-02", course="improving", nerve_root="severe")
    later = assessment_response(SUBJECT, "2026-03-30", course="worse")
    found = inputs(later, first)
    assert found["course"] == "worse"
    assert found["nerve-root"] == []  # not repeated in the reassessment: unknown, not carried over
    assert found["t0"] == "2026-03-02"
    assert found["assessment-date"] == "2026-03-30"


def test_other_subjects_drafts_and_other_questionnaires_are_ignored() -> None:
    other = assessment_response("Patient/someone-else", course="worse")
    draft = {**assessment_response(SUBJECT, course="worse"), "status": "in-progress"}
    foreign = {**assessment_response(SUBJECT, course="worse"), "questionnaire": "http://example.org/Questionnaire/x"}
    assert inputs(other, draft, foreign)["course"] == []


def test_sbst_result_from_the_calculated_items_of_the_response() -> None:
    found = inputs(scored_sbst_response(SUBJECT, 6, 4, authored="2026-03-01"))
    assert (found["sbst-total"], found["sbst-distress"], found["sbst-risk"], found["sbst-date"]) == (6, 4, "high", "2026-03-01")


def test_sbst_result_from_observations_and_the_newest_value_wins() -> None:
    old_response = scored_sbst_response(SUBJECT, 2, 1, authored="2026-02-01")
    newer = [sbst_observation(SUBJECT, "91351-7", 5, "2026-03-10"), sbst_observation(SUBJECT, "91352-5", "medium", "2026-03-10")]
    found = inputs(old_response, *newer)
    assert (found["sbst-total"], found["sbst-risk"]) == (5, "medium")
    assert found["sbst-distress"] == 1  # only the response has a subscale
    assert found["sbst-date"] == "2026-03-10"


@pytest.mark.parametrize(("birth", "age"), [("2008-03-02", 18), ("2008-03-03", 17), ("2008", []), ("2007-05", 18), ("2008-03", [])])
def test_age_at_t0_in_full_years_and_empty_when_a_partial_birth_date_is_ambiguous(birth: str, age: object) -> None:
    found = inputs(assessment_response(SUBJECT, episode_start="2026-03-02"), patient={"resourceType": "Patient", "birthDate": birth})
    assert found["age-at-t0"] == age


# --- operation parameters -------------------------------------------------------------------------


def test_parameters_from_a_body_and_from_the_query() -> None:
    body = parameters(
        ("subject", {"valueReference": {"reference": "Patient/p"}}),
        ("practitioner", "Practitioner/dr"),
        ("userLanguage", {"valueCode": "da"}),
        ("setting", {"valueCoding": {"system": "http://x", "code": "gp"}}),
        ("useServerData", False),
        ("parameters", parameters(("threshold", {"valueInteger": 3}), ("tags", "a"), ("tags", "b"))),
    )
    parsed = parse_apply_parameters(body, [("_format", "json")], "planDefinition")
    assert parsed.subjects == ("Patient/p",) and parsed.practitioner == "Practitioner/dr"
    assert parsed.context == {"userLanguage": {"coding": [{"code": "da"}]}, "setting": {"coding": [{"system": "http://x", "code": "gp"}]}}
    assert parsed.use_server_data is False
    assert parsed.parameters == {"threshold": 3, "tags": ["a", "b"]}
    query = parse_apply_parameters(None, [("subject", "http://server/fhir/Patient/p"), ("userType", "http://x|gp"), ("useServerData", "true")], "planDefinition")
    assert query.subjects == ("Patient/p",) and query.context["userType"] == {"coding": [{"system": "http://x", "code": "gp"}]}


@pytest.mark.parametrize(
    ("body", "query", "message"),
    [
        (None, [], "needs a subject"),
        (None, [("subject", "Patient/p"), ("colour", "red")], "does not take colour"),
        (None, [("subject", "Observation/o")], "must be a reference"),
        (None, [("subject", "Patient/p"), ("encounter", "Patient/p")], "must be a reference to a Encounter"),
        (None, [("subject", "Patient/p"), ("useServerData", "maybe")], "true or false"),
        (None, [("subject", "Patient/p"), ("url", "a"), ("url", "b")], "only once"),
        ({"resourceType": "Patient"}, [], "must be a Parameters"),
        (parameters(("subject", "Patient/p"), ("data", "not a resource")), [], "must be a resource"),
        (parameters(("subject", "Patient/p"), ("data", {"resourceType": "Patient"})), [], "must be a Bundle"),
        (parameters(("subject", "Patient/p"), ("parameters", parameters(("age", "5")))), [], "may not redefine"),
    ],
)
def test_bad_parameters_are_refused_with_400(body: object, query: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(FhirError) as refused:
        parse_apply_parameters(body, query, "planDefinition")
    assert refused.value.status == 400
    assert message in refused.value.diagnostics


def test_a_supplied_resource_missing_mandatory_elements_is_a_warning_and_a_broken_one_422() -> None:
    goal_without_description = {"resourceType": "PlanDefinition", "status": "active", "goal": [{"priority": {"text": "high"}}]}
    lax = parse_apply_parameters(parameters(("subject", "Patient/p"), ("planDefinition", goal_without_description)), [], "planDefinition")
    assert [w.code for w in lax.warnings] == ["required"]
    with pytest.raises(FhirError) as refused:
        parse_apply_parameters(parameters(("subject", "Patient/p"), ("planDefinition", {"resourceType": "PlanDefinition", "status": 7})), [], "planDefinition")
    assert refused.value.category is ErrorCategory.INVALID_RESOURCE


def test_data_bundle_references_to_full_urls_become_type_and_id() -> None:
    bundle = collection({"resourceType": "Patient", "id": "p"}, {"resourceType": "Observation", "subject": {"reference": "urn:uuid:1"}})
    bundle["entry"][0]["fullUrl"] = "urn:uuid:1"
    assert data_resources(bundle)[1]["subject"] == {"reference": "Patient/p"}


# --- helpers ----------------------------------------------------------------------------------------------


def test_split_terms_respects_parentheses_strings_and_precedence() -> None:
    assert split_terms("a or (b or c) or 'x or y'") == ["a", "(b or c)", "'x or y'"]
    assert split_terms("(a and b)") == ["a", "b"]
    assert split_terms("a and b or c") == ["a and b", "c"]
    assert split_terms("(a) and (b)") == ["(a)", "(b)"]
    assert split_terms("%`x or y` = 1") == ["%`x or y` = 1"]


def test_set_path_creates_objects_and_list_items() -> None:
    target: dict[str, object] = {"resourceType": "ServiceRequest"}
    set_path(target, "ServiceRequest.performer[0].reference", ["Organization/o"], "ServiceRequest")
    set_path(target, "note[1].text", ["second"])
    set_path(target, "priority", [])  # empty leaves it as it was
    set_path(target, "category", [{"text": "a"}, {"text": "b"}])
    assert target == {
        "resourceType": "ServiceRequest",
        "performer": [{"reference": "Organization/o"}],
        "note": [{}, {"text": "second"}],
        "category": [{"text": "a"}, {"text": "b"}],
    }
    with pytest.raises(PathError):
        set_path(target, "note.where(text='x')", ["y"])


def test_durations_and_due_elements() -> None:
    assert add_duration(date(2026, 3, 2), {"value": 2, "code": "wk"}) == date(2026, 3, 16)
    assert add_duration(date(2024, 2, 29), {"value": 1, "unit": "year"}) == date(2025, 2, 28)
    assert add_duration(date(2026, 3, 2), {"value": 2, "code": "h"}) is None
    assert due_elements("Task", {"timingDateTime": "2026-03-16"}) == {"restriction": {"period": {"end": "2026-03-16"}}}
    assert due_elements("CommunicationRequest", {"timingPeriod": {"start": "a"}}) == {"occurrencePeriod": {"start": "a"}}
    assert due_elements("Goal", {"timingDateTime": "2026-03-16"}) == {}


def test_language_and_translation_lookup() -> None:
    assert language_of({"coding": [{"system": "urn:ietf:bcp:47", "code": "nl-NL"}]}) == "nl-NL"
    assert language_of({"text": "da"}) == "da" and language_of(None) is None
    translated = {"url": "http://hl7.org/fhir/StructureDefinition/translation", "extension": [{"url": "lang", "valueCode": "nl"}, {"url": "content", "valueString": "Hallo"}]}
    resource = {"title": "Hello", "_title": {"extension": [translated]}, "action": [{"title": "Hi"}]}
    assert localized(resource, "nl-BE")["title"] == "Hallo"
    assert localized(resource, "da")["title"] == "Hello"
    assert localized(resource, None) is resource
