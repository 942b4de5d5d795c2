"""enableWhen and enableWhenExpression, on the SDC test form and on small forms of our own.

The SDC form (`../shared/conformance/sdc/Questionnaire-questionnaire-sdc-test-enableWhen.json`)
has a fault the spec rules out: several conditions compare a Coding question with answerString,
answerDecimal or answerInteger. Per R4 the answer type must match the question, so those
conditions never hold, and the engine says so in a warning rather than guessing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.questionnaire.enablement import Enablement
from app.questionnaire.expressions import SdcEnvironment
from app.questionnaire.tree import QuestionnaireIndex, response_nodes, walk

Q1 = "83d5c1a6-5dc3-44d0-9d9e-d687c72e143e"
Q2 = "fe0106a5-0e25-43a4-9820-7acb7e74d9d7"
YES_NO = "1acf93a7-0890-44cd-be48-542defb35248"
V2 = "http://terminology.hl7.org/CodeSystem/v2-0532"


@pytest.fixture(scope="module")
def form(shared_dir: Path) -> dict[str, Any]:
    return json.loads((shared_dir / "conformance/sdc/Questionnaire-questionnaire-sdc-test-enableWhen.json").read_text())  # type: ignore[no-any-return]


def skeleton(items: list[dict[str, Any]], answers: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One response item per Questionnaire item, answered as `answers` says."""
    out = []
    for item in items:
        if item["type"] == "display":
            continue
        node: dict[str, Any] = {"linkId": item["linkId"]}
        if item["linkId"] in answers:
            node["answer"] = answers[item["linkId"]]
        if item.get("item"):
            node["item"] = skeleton(item["item"], answers)
        out.append(node)
    return out


def enabled(questionnaire: dict[str, Any], answers: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, bool], list[str]]:
    response = {"resourceType": "QuestionnaireResponse", "status": "in-progress", "item": skeleton(questionnaire["item"], answers)}
    index = QuestionnaireIndex.of(questionnaire)
    nodes = response_nodes(index, response)
    enablement = Enablement(SdcEnvironment(index, response), nodes)
    state = {node.link_id: enablement.is_enabled(node) for node in walk(nodes)}
    return state, [issue.diagnostics for issue in enablement.issues]


def boolean(value: bool) -> list[dict[str, Any]]:
    return [{"valueBoolean": value}]


def coding(code: str, system: str = "http://example.org") -> dict[str, Any]:
    return {"valueCoding": {"system": system, "code": code}}


def test_boolean_conditions_and_groups_with_their_children(form: dict[str, Any]) -> None:
    state, _ = enabled(form, {Q1: boolean(True), Q2: boolean(False)})
    assert state["e5da17a7-7546-45c5-9bcd-d0b09a74cc14"] is True  # hidden until Q1 checked
    assert state["65578509-21ae-4a48-94de-e46b1e87d3fb"] is True  # group hidden until Q1 checked
    assert state["65578509-21ae-4a48-94de-e46b1e54kjui"] is True  # ... and its child
    assert state["3ca80fdf-6598-4dd7-b9df-8a2f10895e4e"] is True  # group present while Q2 is false
    state, _ = enabled(form, {Q1: boolean(False), Q2: boolean(True)})
    assert state["e5da17a7-7546-45c5-9bcd-d0b09a74cc14"] is False
    assert state["65578509-21ae-4a48-94de-e46b1e54kjui"] is False  # a disabled group disables its items
    assert state["3ca80fdf-6598-4dd7-b9df-8a2f10895e4e"] is False


def test_an_unanswered_question_satisfies_no_equality(form: dict[str, Any]) -> None:
    state, _ = enabled(form, {})
    assert state["e5da17a7-7546-45c5-9bcd-d0b09a74cc14"] is False
    assert state["3ca80fdf-6598-4dd7-b9df-8a2f10895e4e"] is False  # '= false' needs the answer false
    assert state["fab7c5c4-0ac0-4afa-bd6d-c0ce4f5e0bdf"] is False  # '!= ASKU' needs some answer


@pytest.mark.parametrize("answer, yes_group, yes_no_group", [("Y", True, True), ("N", False, True), ("ASKU", False, False)])
def test_coding_equality_and_inequality(form: dict[str, Any], answer: str, yes_group: bool, yes_no_group: bool) -> None:
    state, issues = enabled(form, {YES_NO: [coding(answer, V2)]})
    assert state["945b97b5-6d74-4a55-9be1-1989751219fb"] is yes_group
    assert state["fab7c5c4-0ac0-4afa-bd6d-c0ce4f5e0bdf"] is yes_no_group
    assert not [i for i in issues if "1acf93a7" in i]


@pytest.mark.parametrize(
    "birth, after, before", [("2001-05-05", True, False), ("1999-12-31", False, True), ("2000-01-01", False, True)]
)
def test_date_comparisons(form: dict[str, Any], birth: str, after: bool, before: bool) -> None:
    state, _ = enabled(form, {"date_of_birth_question": [{"valueDate": birth}]})
    assert state["date_greater_2000-01-01"] is after
    assert state["date_less_2000-01-01"] is before


@pytest.mark.parametrize("time, later, earlier", [("12:00:00", True, False), ("11:11:11", False, True), ("08:30:00", False, True)])
def test_time_comparisons(form: dict[str, Any], time: str, later: bool, earlier: bool) -> None:
    state, _ = enabled(form, {"datetime_question": [{"valueTime": time}]})
    assert state["datetime_question_greter_than"] is later
    assert state["datetime_question_less_than_equal"] is earlier


@pytest.mark.parametrize("codes, shown", [(["1", "9"], True), (["1", "2"], False), (["9"], True)])
def test_any_answer_of_a_repeating_question_can_satisfy_the_condition(form: dict[str, Any], codes: list[str], shown: bool) -> None:
    state, _ = enabled(form, {"BC029": [coding(c) for c in codes]})
    assert state["BOWOPTOTH"] is shown


@pytest.mark.parametrize(
    "question, answer, dependent",
    [
        ("s1-radio", coding("2"), "e5da17a7-7546-45c5-9bcd-d0b09a74ty76"),  # answerString "2" against a Coding
        ("s3-radio", coding("1.1"), "945b97b5-6d74-4a55-9be1-19897512jj89"),  # answerDecimal 2.1 against a Coding
        ("s4-radio", coding("2"), "945b97b5-6d74-4a55-9be1-1989751233ew"),  # answerInteger 2 against a Coding
    ],
)
def test_a_condition_whose_type_does_not_match_the_question_never_holds_and_is_reported(
    form: dict[str, Any], question: str, answer: dict[str, Any], dependent: str
) -> None:
    state, issues = enabled(form, {question: [answer]})
    assert state[dependent] is False
    assert any(f"Item '{dependent}'" in i and "never matches" in i for i in issues)


def small_form(*items: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"resourceType": "Questionnaire", "status": "active", "item": list(items), **fields}


def test_all_and_any_behaviour() -> None:
    conditions = [{"question": "a", "operator": "=", "answerBoolean": True}, {"question": "b", "operator": "=", "answerBoolean": True}]
    form = small_form(
        {"linkId": "a", "type": "boolean"},
        {"linkId": "b", "type": "boolean"},
        {"linkId": "both", "type": "string", "enableWhen": conditions, "enableBehavior": "all"},
        {"linkId": "either", "type": "string", "enableWhen": conditions, "enableBehavior": "any"},
    )
    state, _ = enabled(form, {"a": boolean(True), "b": boolean(False)})
    assert (state["both"], state["either"]) == (False, True)


def test_a_disabled_question_counts_as_unanswered() -> None:
    form = small_form(
        {"linkId": "gate", "type": "boolean"},
        {"linkId": "middle", "type": "boolean", "enableWhen": [{"question": "gate", "operator": "=", "answerBoolean": True}]},
        {"linkId": "last", "type": "string", "enableWhen": [{"question": "middle", "operator": "exists", "answerBoolean": True}]},
    )
    state, _ = enabled(form, {"gate": boolean(False), "middle": boolean(True)})
    assert (state["middle"], state["last"]) == (False, False)
    state, _ = enabled(form, {"gate": boolean(True), "middle": boolean(True)})
    assert (state["middle"], state["last"]) == (True, True)


def test_enable_when_expression_uses_the_sdc_environment() -> None:
    expression = {"url": "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-enableWhenExpression",
                  "valueExpression": {"language": "text/fhirpath", "expression": "%resource.item.where(linkId='score').answer.value > %limit"}}
    limit = {"url": "http://hl7.org/fhir/StructureDefinition/variable", "valueExpression": {"name": "limit", "language": "text/fhirpath", "expression": "3"}}
    form = small_form({"linkId": "score", "type": "integer"}, {"linkId": "why", "type": "string", "extension": [expression]}, extension=[limit])
    assert enabled(form, {"score": [{"valueInteger": 5}]})[0]["why"] is True
    assert enabled(form, {"score": [{"valueInteger": 2}]})[0]["why"] is False


def test_a_broken_enable_when_expression_leaves_the_item_enabled_and_says_why() -> None:
    expression = {"url": "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-enableWhenExpression",
                  "valueExpression": {"language": "text/fhirpath", "expression": "%nowhere.exists()"}}
    state, issues = enabled(small_form({"linkId": "why", "type": "string", "extension": [expression]}), {})
    assert state["why"] is True
    assert "cannot be evaluated" in issues[0]


def test_the_nearest_occurrence_in_a_repeating_group_is_used() -> None:
    form = small_form({"linkId": "visit", "type": "group", "repeats": True, "item": [
        {"linkId": "pain", "type": "boolean"},
        {"linkId": "where", "type": "string", "enableWhen": [{"question": "pain", "operator": "=", "answerBoolean": True}]},
    ]})
    response = {"resourceType": "QuestionnaireResponse", "status": "in-progress", "item": [
        {"linkId": "visit", "item": [{"linkId": "pain", "answer": boolean(True)}, {"linkId": "where"}]},
        {"linkId": "visit", "item": [{"linkId": "pain", "answer": boolean(False)}, {"linkId": "where"}]},
    ]}
    index = QuestionnaireIndex.of(form)
    nodes = response_nodes(index, response)
    enablement = Enablement(SdcEnvironment(index, response), nodes)
    assert [enablement.is_enabled(n) for n in walk(nodes) if n.link_id == "where"] == [True, False]


def test_lbp_pain_centre_items_are_asked_only_after_six_months(lbp: dict[str, Any]) -> None:
    assert enabled(lbp, {"pain-duration-weeks": [{"valueInteger": 30}]})[0]["diagnostically-clarified"] is True
    assert enabled(lbp, {"pain-duration-weeks": [{"valueInteger": 10}]})[0]["multidisciplinary-need"] is False
