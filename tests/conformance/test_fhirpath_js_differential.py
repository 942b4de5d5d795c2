"""Differential test: the Questionnaires' variables and calculatedExpressions give the same results in fhirpath.js
(the npm `fhirpath` package, installed by scripts/node_packages.sh) as in BackPath's engine.

All 1,280 STarT Back answer combinations and some incomplete responses go to one Node process
(`tests/node/fhirpath_eval.js`), which evaluates the root variables in order and then each item's
calculatedExpression with `%resource`, `%questionnaire` and `%qitem`, as SDC defines them.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from app.questionnaire.expressions import SdcEnvironment
from app.questionnaire.extensions import CALCULATED_EXPRESSION, VARIABLE, expression_of, extensions
from app.questionnaire.tree import QuestionnaireIndex, response_nodes, walk
from tests.factories import sbst_response

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "tests/node/fhirpath_eval.js"
BOTHERSOME = ("not-at-all", "slightly", "moderately", "very-much", "extremely")


def responses() -> list[dict[str, Any]]:
    complete = [sbst_response(agree, bothersome) for agree, bothersome in itertools.product(itertools.product((False, True), repeat=8), BOTHERSOME)]
    partial = []
    for keep in (0, 4, 8):
        response = sbst_response([True] * 8, "extremely", status="in-progress")
        response["item"] = response["item"][:keep]
        partial.append(response)
    return complete + partial


def ours(questionnaire: dict[str, Any], response: dict[str, Any]) -> list[Any]:
    """Each calculated item's value in our engine, evaluated where the item would be."""
    index = QuestionnaireIndex.of(questionnaire)
    working = {**response, "item": [*response.get("item", []), *({"linkId": i["linkId"]} for i in calculated(questionnaire))]}
    environment = SdcEnvironment(index, working)
    nodes = {n.link_id: n for n in walk(response_nodes(index, working))}
    results = []
    for item in calculated(questionnaire):
        values = environment.evaluate(expression_of(item, CALCULATED_EXPRESSION) or {}, nodes[item["linkId"]], item)
        results.append([int(v) if isinstance(v, Decimal) and v == v.to_integral_value() else v for v in values])
    return results


def calculated(questionnaire: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in QuestionnaireIndex.of(questionnaire).in_document_order() if expression_of(i, CALCULATED_EXPRESSION)]


def variables(element: dict[str, Any]) -> list[list[str]]:
    return [[e["valueExpression"]["name"], e["valueExpression"]["expression"]] for e in extensions(element, VARIABLE)]


def theirs(questionnaire: dict[str, Any], all_responses: list[dict[str, Any]]) -> list[list[Any]]:
    if shutil.which("node") is None or not (ROOT / "node_modules/fhirpath").is_dir():
        pytest.fail("node and the npm fhirpath package are needed: run scripts/node_packages.sh (scripts/test.sh does)")
    items = calculated(questionnaire)
    cases = [
        {
            "resource": r,
            "questionnaire": questionnaire,
            "qitem": item,
            "variables": [*variables(questionnaire), *variables(item)],  # the root's, then the item's own
            "expression": expression_of(item, CALCULATED_EXPRESSION)["expression"],  # type: ignore[index]
        }
        for r in all_responses
        for item in items
    ]
    run = subprocess.run(["node", str(RUNNER)], input=json.dumps({"cases": cases}), capture_output=True, text=True, timeout=120, check=True)
    results = json.loads(run.stdout)["results"]
    return [results[i : i + len(items)] for i in range(0, len(results), len(items))]


def test_fhirpath_js_agrees_on_every_sbst_calculation(start_back_questionnaire: dict[str, Any]) -> None:
    all_responses = responses()
    peer = theirs(start_back_questionnaire, all_responses)
    mine = [ours(start_back_questionnaire, r) for r in all_responses]
    assert [(r["item"], m, p) for r, m, p in zip(all_responses, mine, peer, strict=True) if m != p] == []
    assert peer[1279] == [[9], [5], [{"system": "http://loinc.org", "code": "LA9193-9", "display": "High"}]]  # all agree, extremely
    assert peer[1280:] == [[[], [], []]] * 3  # incomplete: no scores in either engine


@pytest.fixture(scope="module")
def start_back_questionnaire() -> dict[str, Any]:
    return json.loads((ROOT / "plandefinitions/Questionnaire-start-back.json").read_text())  # type: ignore[no-any-return]
