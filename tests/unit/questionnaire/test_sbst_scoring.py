"""STarT Back scoring comes from the Questionnaire's itemWeights and calculatedExpressions.

Every one of the 2^8 x 5 = 1,280 answer combinations is scored by the SDC engine and checked
against a plain-Python rendering of the Keele rules written here, independent of the engine.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from app.questionnaire.submission import process_submission
from tests.factories import sbst_response

BOTHERSOME = ("not-at-all", "slightly", "moderately", "very-much", "extremely")
RISK_CODES = {"low": "LA9194-7", "medium": "LA8982-6", "high": "LA9193-9"}


def keele(agree: tuple[bool, ...], bothersome: str) -> tuple[int, int, str]:
    """Keele SBST: items 1-8 score 1 for agree, item 9 for very much / extremely; total items 1-9,
    distress items 5-9; high when distress >= 4, else medium when total >= 4, else low."""
    scores = [int(a) for a in agree] + [int(bothersome in ("very-much", "extremely"))]
    total, distress = sum(scores), sum(scores[4:])
    risk = "high" if distress >= 4 else "medium" if total >= 4 else "low"
    return total, distress, risk


def scores(response: dict[str, Any]) -> tuple[Any, Any, Any]:
    found = {item["linkId"]: item.get("answer") for item in response["item"]}
    total = found.get("total-score")
    distress = found.get("distress-subscale")
    risk = found.get("risk-level")
    return (
        total[0]["valueInteger"] if total else None,
        distress[0]["valueInteger"] if distress else None,
        risk[0]["valueCoding"]["code"] if risk else None,
    )


def test_every_answer_combination_scores_as_keele_says(start_back: dict[str, Any]) -> None:
    wrong = []
    combinations = list(itertools.product(itertools.product((False, True), repeat=8), BOTHERSOME))
    assert len(combinations) == 1280
    for agree, bothersome in combinations:
        submission = process_submission(start_back, sbst_response(agree, bothersome))
        total, distress, risk = keele(agree, bothersome)
        expected = (total, distress, RISK_CODES[risk])
        if submission.errors or scores(submission.response) != expected:
            wrong.append((agree, bothersome, scores(submission.response), expected, submission.errors))
    assert wrong == []


def test_the_risk_answer_is_the_loinc_coding_with_its_display(start_back: dict[str, Any]) -> None:
    submission = process_submission(start_back, sbst_response([True] * 8, "extremely"))
    risk = next(i for i in submission.response["item"] if i["linkId"] == "risk-level")
    assert risk["answer"] == [{"valueCoding": {"system": "http://loinc.org", "code": "LA9193-9", "display": "High"}}]
    assert [i["linkId"] for i in submission.response["item"]][-3:] == ["total-score", "distress-subscale", "risk-level"]


def test_changing_a_weight_in_the_json_changes_the_score(start_back: dict[str, Any]) -> None:
    item_1 = next(i for i in start_back["item"] if i["linkId"] == "1")
    agree = next(o for o in item_1["answerOption"] if o["valueCoding"]["code"] == "agree")
    agree["extension"][0]["valueDecimal"] = 3
    submission = process_submission(start_back, sbst_response([True] + [False] * 7, "not-at-all"))
    assert scores(submission.response)[:2] == (3, 0)


def test_changing_an_expression_in_the_json_changes_the_result(start_back: dict[str, Any]) -> None:
    risk = next(i for i in start_back["item"] if i["linkId"] == "risk-level")
    expression = next(e["valueExpression"] for e in risk["extension"] if "%total >= 4" in e.get("valueExpression", {}).get("expression", ""))
    expression["expression"] = expression["expression"].replace("%total >= 4", "%total >= 2")
    submission = process_submission(start_back, sbst_response([True, True] + [False] * 6, "not-at-all"))
    assert scores(submission.response) == (2, 0, "LA8982-6")


def test_no_score_until_all_nine_items_are_answered(start_back: dict[str, Any]) -> None:
    response = sbst_response([True] * 8, "extremely", status="in-progress")
    response["item"] = response["item"][:5]
    submission = process_submission(start_back, response)
    assert submission.errors == ()
    assert scores(submission.response) == (None, None, None)
    assert {i["linkId"] for i in submission.response["item"]} == {"1", "2", "3", "4", "5"}


@pytest.mark.parametrize("link_id, wrong", [("total-score", {"valueInteger": 0}), ("risk-level", {"valueCoding": {"system": "http://loinc.org", "code": "LA9194-7"}})])
def test_a_disagreeing_read_only_score_is_replaced_with_a_warning(start_back: dict[str, Any], link_id: str, wrong: dict[str, Any]) -> None:
    response = sbst_response([True] * 8, "extremely")
    response["item"].append({"linkId": link_id, "answer": [wrong]})
    submission = process_submission(start_back, response)
    assert scores(submission.response) == (9, 5, "LA9193-9")
    assert [(w.code, w.expression) for w in submission.warnings] == [("business-rule", (f"QuestionnaireResponse.item.where(linkId='{link_id}')",))]


def test_a_score_the_item_lets_the_user_override_is_kept(start_back: dict[str, Any]) -> None:
    total = next(i for i in start_back["item"] if i["linkId"] == "total-score")
    del total["readOnly"]
    response = sbst_response([True] * 8, "extremely")
    response["item"].append({"linkId": "total-score", "answer": [{"valueInteger": 7}]})
    submission = process_submission(start_back, response)
    assert scores(submission.response) == (7, 5, "LA9193-9")
    assert submission.warnings == ()


def test_a_matching_client_score_passes_silently(start_back: dict[str, Any]) -> None:
    scored = process_submission(start_back, sbst_response([True, False] * 4, "slightly")).response
    again = process_submission(start_back, scored)
    assert again.response == scored
    assert again.warnings == () and again.errors == ()
