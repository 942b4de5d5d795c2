"""A completed response that breaks a rule of its Questionnaire gets one error per item, located
by a FHIRPath naming the item's linkId; in-progress responses get warnings instead."""

from __future__ import annotations

from typing import Any

import pytest

from app.questionnaire.submission import process_submission

CORE = "http://hl7.org/fhir/StructureDefinition/"
OPTIONS = "http://example.org/options"


def questionnaire() -> dict[str, Any]:
    """A small Questionnaire with one item per rule under test."""
    return {
        "resourceType": "Questionnaire",
        "status": "active",
        "item": [
            {"linkId": "name", "text": "Name", "_text": {"extension": [{"url": CORE + "translation", "extension": [
                {"url": "lang", "valueCode": "nl"}, {"url": "content", "valueString": "Naam"}]}]},
             "type": "string", "required": True, "maxLength": 5,
             "extension": [{"url": CORE + "minLength", "valueInteger": 2}, {"url": CORE + "regex", "valueString": "[A-Z][a-z]*"}]},
            {"linkId": "age", "type": "integer", "extension": [{"url": CORE + "minValue", "valueInteger": 18}, {"url": CORE + "maxValue", "valueInteger": 120}]},
            {"linkId": "weight", "type": "decimal", "extension": [{"url": CORE + "maxDecimalPlaces", "valueInteger": 1}]},
            {"linkId": "seen", "type": "date", "extension": [{"url": CORE + "maxValue", "valueDate": "2030-01-01"}]},
            {"linkId": "smoker", "type": "boolean"},
            {"linkId": "packs", "type": "integer", "required": True, "enableWhen": [{"question": "smoker", "operator": "=", "answerBoolean": True}]},
            {"linkId": "colour", "type": "choice", "answerOption": [
                {"valueCoding": {"system": OPTIONS, "code": "red"}}, {"valueCoding": {"system": OPTIONS, "code": "blue"}}]},
            {"linkId": "size", "type": "choice", "answerValueSet": "#sizes"},
            {"linkId": "pets", "type": "open-choice", "repeats": True, "answerOption": [{"valueCoding": {"system": OPTIONS, "code": "cat"}}]},
            {"linkId": "visit", "type": "group", "repeats": True, "item": [{"linkId": "visit-date", "type": "date", "required": True}]},
            {"linkId": "about", "type": "group", "item": [{"linkId": "note", "type": "text"}]},
            {"linkId": "intro", "type": "display", "text": "Please answer"},
        ],
        "contained": [{"resourceType": "ValueSet", "id": "sizes", "status": "active", "compose": {"include": [
            {"system": OPTIONS, "concept": [{"code": "small"}, {"code": "large"}]}]}}],
    }


def response(*items: dict[str, Any], status: str = "completed", **fields: Any) -> dict[str, Any]:
    return {"resourceType": "QuestionnaireResponse", "status": status, "item": [{"linkId": "name", "answer": [{"valueString": "Anna"}]}, *items], **fields}


def problems(resp: dict[str, Any]) -> list[tuple[str, tuple[str, ...]]]:
    return [(issue.code, issue.expression) for issue in process_submission(questionnaire(), resp).errors]


def at(link_id: str) -> tuple[str, ...]:
    return (f"QuestionnaireResponse.item.where(linkId='{link_id}')",)


def test_a_valid_response_has_no_problems() -> None:
    assert problems(response(
        {"linkId": "age", "answer": [{"valueInteger": 40}]},
        {"linkId": "smoker", "answer": [{"valueBoolean": True}]},
        {"linkId": "packs", "answer": [{"valueInteger": 2}]},
        {"linkId": "colour", "answer": [{"valueCoding": {"system": OPTIONS, "code": "red"}}]},
        {"linkId": "size", "answer": [{"valueCoding": {"system": OPTIONS, "code": "large"}}]},
        {"linkId": "pets", "answer": [{"valueCoding": {"system": OPTIONS, "code": "cat"}}, {"valueString": "a newt"}]},
        {"linkId": "visit", "item": [{"linkId": "visit-date", "answer": [{"valueDate": "2025-01-01"}]}]},
        {"linkId": "visit", "item": [{"linkId": "visit-date", "answer": [{"valueDate": "2025-02-01"}]}]},
    )) == []


@pytest.mark.parametrize(
    "items, code, where",
    [
        pytest.param([{"linkId": "nope", "answer": [{"valueString": "x"}]}], "structure", at("nope"), id="unknown linkId"),
        pytest.param([{"linkId": "about", "item": [{"linkId": "age", "answer": [{"valueInteger": 40}]}]}], "structure",
                     ("QuestionnaireResponse.item.where(linkId='about').item.where(linkId='age')",), id="item in the wrong place"),
        pytest.param([{"linkId": "colour", "answer": [{"valueCoding": {"system": OPTIONS, "code": "red"}}]}, {"linkId": "age", "answer": [{"valueInteger": 40}]}],
                     "structure", at("age"), id="out of order"),
        pytest.param([{"linkId": "age", "answer": [{"valueInteger": 40}]}, {"linkId": "age", "answer": [{"valueInteger": 41}]}],
                     "structure", ("QuestionnaireResponse.item.where(linkId='age')[1]",), id="question twice (qrs-2)"),
        pytest.param([{"linkId": "about", "item": [{"linkId": "note", "answer": [{"valueString": "a"}]}]}, {"linkId": "about", "item": [{"linkId": "note", "answer": [{"valueString": "b"}]}]}],
                     "structure", ("QuestionnaireResponse.item.where(linkId='about')[1]",), id="non-repeating group twice"),
        pytest.param([{"linkId": "smoker", "answer": [{"valueBoolean": False}]}, {"linkId": "packs", "answer": [{"valueInteger": 2}]}],
                     "business-rule", at("packs"), id="answered but not enabled"),
        pytest.param([{"linkId": "smoker", "answer": [{"valueBoolean": True}]}], "required", at("packs"), id="enabled required item unanswered"),
        pytest.param([{"linkId": "visit", "item": [{"linkId": "visit-date"}]}], "required",
                     ("QuestionnaireResponse.item.where(linkId='visit').item.where(linkId='visit-date')",), id="required in a group"),
        pytest.param([{"linkId": "age", "answer": [{"valueInteger": 40}, {"valueInteger": 41}]}], "structure", at("age"), id="does not repeat"),
        pytest.param([{"linkId": "age", "answer": [{"valueString": "forty"}]}], "value", at("age"), id="wrong answer type"),
        pytest.param([{"linkId": "colour", "answer": [{"valueCoding": {"system": OPTIONS, "code": "green"}}]}], "code-invalid", at("colour"), id="not an answerOption"),
        pytest.param([{"linkId": "pets", "answer": [{"valueCoding": {"system": OPTIONS, "code": "dog"}}]}], "code-invalid", at("pets"), id="open-choice coding not an option"),
        pytest.param([{"linkId": "size", "answer": [{"valueCoding": {"system": OPTIONS, "code": "huge"}}]}], "code-invalid", at("size"), id="not in the answer ValueSet"),
        pytest.param([{"linkId": "age", "answer": [{"valueInteger": 12}]}], "value", at("age"), id="below minValue"),
        pytest.param([{"linkId": "age", "answer": [{"valueInteger": 121}]}], "value", at("age"), id="above maxValue"),
        pytest.param([{"linkId": "seen", "answer": [{"valueDate": "2031-05-01"}]}], "value", at("seen"), id="date above maxValue"),
        pytest.param([{"linkId": "weight", "answer": [{"valueDecimal": 70.25}]}], "value", at("weight"), id="too many decimal places"),
        pytest.param([{"linkId": "intro", "answer": [{"valueString": "x"}]}], "structure", at("intro"), id="display item answered"),
        pytest.param([{"linkId": "about", "answer": [{"valueString": "x"}], "item": [{"linkId": "note", "answer": [{"valueString": "a"}]}]}],
                     "structure", at("about"), id="group with answers (qrs-1)"),
    ],
)
def test_each_rule_is_enforced_at_the_item(items: list[dict[str, Any]], code: str, where: tuple[str, ...]) -> None:
    assert problems(response(*items)) == [(code, where)]


@pytest.mark.parametrize("name, why", [("Annabel", "maxLength"), ("A", "minLength"), ("anna", "pattern")])
def test_string_length_and_pattern(name: str, why: str) -> None:
    resp = response()
    resp["item"][0]["answer"] = [{"valueString": name}]
    errors = process_submission(questionnaire(), resp).errors
    assert [(e.code, e.expression) for e in errors] == [("value", at("name"))]
    assert why in errors[0].diagnostics


def test_a_missing_required_item_is_reported_where_it_belongs() -> None:
    resp = response()
    resp["item"] = []
    assert problems(resp) == [("required", at("name"))]


def test_several_problems_of_one_item_make_one_issue() -> None:
    errors = process_submission(questionnaire(), response({"linkId": "age", "answer": [{"valueInteger": 1}, {"valueInteger": 200}]})).errors
    assert len(errors) == 1
    assert errors[0].diagnostics.count(";") == 2  # does not repeat; below minValue; above maxValue


def test_the_item_text_must_be_the_questionnaires_or_a_translation() -> None:
    resp = response()
    resp["item"][0]["text"] = "Naam"
    assert problems(resp) == []
    resp["item"][0]["text"] = "Your name"
    assert problems(resp) == [("value", at("name"))]
    resp["language"] = "nl"
    resp["item"][0]["text"] = "Name"
    assert problems(resp) == []


def test_an_in_progress_response_may_be_incomplete_and_gets_warnings_only() -> None:
    resp = response({"linkId": "age", "answer": [{"valueInteger": 12}]}, status="in-progress")
    resp["item"] = resp["item"][1:]
    submission = process_submission(questionnaire(), resp)
    assert submission.errors == ()
    assert [(w.severity, w.expression) for w in submission.warnings] == [("warning", at("age"))]


def test_an_entered_in_error_response_is_not_checked() -> None:
    resp = response({"linkId": "nope"}, status="entered-in-error")
    assert process_submission(questionnaire(), resp).errors == ()
