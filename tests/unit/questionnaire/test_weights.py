"""weight() / ordinal() per SDC, on the SDC PHQ-9 example and on the other places a weight can live.

The example (`../shared/conformance/sdc/`) is used for parsing and look-ups only, as
`../shared/standards.md` §7 warns: its response codes `Not-at-all` where the ValueSet has
`not-at-all`, its root-level expression misses the nested items, "Nearly every day" weighs 4, and
the stored total (13) is not what the answers give (11).
"""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from app.fhir.fhirpath import FhirPathError
from app.fhir.models import validate_resource
from app.questionnaire.expressions import SdcEnvironment, Terminology
from app.questionnaire.tree import QuestionnaireIndex, response_nodes, walk

SDC = "conformance/sdc"
FIXED = "%resource.repeat(item).where(linkId != 'H1/TS').answer.value.weight().sum()"


@pytest.fixture(scope="module")
def phq9(shared_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    questionnaire = json.loads((shared_dir / SDC / "Questionnaire-questionnaire-sdc-profile-example-PHQ9.json").read_text())
    response = json.loads((shared_dir / SDC / "QuestionnaireResponse-questionnaireresponse-sdc-profile-example-PHQ9.json").read_text())
    return questionnaire, response


def fhirpath(expression: str) -> dict[str, str]:
    return {"language": "text/fhirpath", "expression": expression}


def test_the_examples_load(phq9: tuple[dict[str, Any], dict[str, Any]]) -> None:
    questionnaire, response = phq9
    validate_resource(questionnaire, "Questionnaire")
    validate_resource(response, "QuestionnaireResponse")
    assert len(QuestionnaireIndex.of(questionnaire).items) == 11


def test_each_answer_weighs_what_the_contained_value_set_expansion_says(phq9: tuple[dict[str, Any], dict[str, Any]]) -> None:
    questionnaire, response = copy.deepcopy(phq9)
    for node in walk(response_nodes(QuestionnaireIndex.of(questionnaire), response)):
        for answer in node.item.get("answer", []):
            if "valueCoding" in answer:
                answer["valueCoding"]["code"] = answer["valueCoding"]["code"].replace("Not-at-all", "not-at-all")
    index = QuestionnaireIndex.of(questionnaire)
    environment = SdcEnvironment(index, response)
    weights = {}
    for node in walk(response_nodes(index, response)):
        if node.link_id.startswith("H1/T1/Q"):
            weights[node.item["answer"][0]["valueCoding"]["code"]] = environment.evaluate(fhirpath("answer.value.weight()"), node, node.definition)
    assert weights == {
        "not-at-all": [Decimal(0)],
        "Several-days": [Decimal(1)],
        "More than half the days": [Decimal(2)],
        "Nearly every day": [Decimal(4)],
    }
    assert SdcEnvironment(index, response).evaluate(fhirpath(FIXED), None, None) == [11]


def test_the_examples_root_level_expression_sees_no_answers(phq9: tuple[dict[str, Any], dict[str, Any]]) -> None:
    questionnaire, response = phq9
    published = questionnaire["item"][0]["item"][-1]["extension"][0]["valueExpression"]
    assert SdcEnvironment(QuestionnaireIndex.of(questionnaire), response).evaluate(published, None, None) == [0]


def test_a_code_without_a_weight_fails_the_expression(phq9: tuple[dict[str, Any], dict[str, Any]]) -> None:
    questionnaire, response = phq9
    with pytest.raises(FhirPathError, match="Not-at-all"):
        SdcEnvironment(QuestionnaireIndex.of(questionnaire), response).evaluate(fhirpath(FIXED), None, None)


def weighted_form(option: dict[str, Any], **item: Any) -> dict[str, Any]:
    return {"resourceType": "Questionnaire", "status": "active", "item": [{"linkId": "q", "type": "choice", "answerOption": [option], **item}]}


def weight_of(questionnaire: dict[str, Any], answer: dict[str, Any], terminology: Terminology | None = None, expression: str = "weight()") -> list[Any]:
    response = {"resourceType": "QuestionnaireResponse", "status": "completed", "item": [{"linkId": "q", "answer": [answer]}]}
    return SdcEnvironment(QuestionnaireIndex.of(questionnaire), response, terminology).evaluate(
        fhirpath(f"%resource.item.answer.value.{expression}"), None, None
    )


CODING = {"system": "http://example.org/cs", "code": "x"}
ITEM_WEIGHT = "http://hl7.org/fhir/StructureDefinition/itemWeight"
ORDINAL = "http://hl7.org/fhir/StructureDefinition/ordinalValue"


def test_weight_on_the_answer_option_and_the_sdc3_ordinal_name() -> None:
    form = weighted_form({"valueCoding": CODING, "extension": [{"url": ORDINAL, "valueDecimal": 2.5}]})
    assert weight_of(form, {"valueCoding": dict(CODING)}) == [Decimal("2.5")]
    assert weight_of(form, {"valueCoding": dict(CODING)}, expression="ordinal()") == [Decimal("2.5")]


def test_weight_on_the_coding_itself_wins() -> None:
    form = weighted_form({"valueCoding": CODING, "extension": [{"url": ITEM_WEIGHT, "valueDecimal": 1}]})
    answer = {"valueCoding": {**CODING, "extension": [{"url": ITEM_WEIGHT, "valueDecimal": 7}]}}
    assert weight_of(form, answer) == [Decimal(7)]


def test_weight_from_the_code_system_property() -> None:
    code_system = {"resourceType": "CodeSystem", "url": CODING["system"], "status": "active", "content": "complete",
                   "property": [{"code": "score", "uri": "http://hl7.org/fhir/concept-properties#itemWeight", "type": "decimal"}],
                   "concept": [{"code": "x", "property": [{"code": "score", "valueDecimal": 3}]}]}
    form = weighted_form({"valueCoding": CODING})
    assert weight_of(form, {"valueCoding": dict(CODING)}, Terminology(code_systems={CODING["system"]: code_system})) == [Decimal(3)]
    with pytest.raises(FhirPathError, match="no weight"):
        weight_of(form, {"valueCoding": dict(CODING)})


def test_non_coded_values_weigh_nothing() -> None:
    form = {"resourceType": "Questionnaire", "status": "active", "item": [{"linkId": "q", "type": "integer"}]}
    assert weight_of(form, {"valueInteger": 4}) == []
