"""The SDC examples in `../shared/conformance/sdc/` load into BackPath, and their responses are
judged against their Questionnaires as the spec says (mind `../shared/standards.md` §7)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.questionnaire.submission import process_submission
from app.questionnaire.tree import QuestionnaireIndex
from tests.factories import FHIR_JSON

QUESTIONNAIRES = [
    "Questionnaire-questionnaire-sdc-profile-example-PHQ9.json",
    "Questionnaire-questionnaire-sdc-profile-example-cqf-PHQ9.json",
    "Questionnaire-questionnaire-sdc-test-enableWhen.json",
    "smartforms-QComplexTemplateExtract.json",
]


def example(shared_dir: Path, name: str) -> dict[str, Any]:
    return json.loads((shared_dir / "conformance/sdc" / name).read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", QUESTIONNAIRES)
async def test_each_example_questionnaire_is_stored_and_indexed(client: httpx.AsyncClient, shared_dir: Path, name: str) -> None:
    questionnaire = example(shared_dir, name)
    stored = await client.put(f"/Questionnaire/{questionnaire['id']}", json=questionnaire, headers=FHIR_JSON)
    assert stored.status_code in (200, 201), stored.text
    assert QuestionnaireIndex.of(questionnaire).items
    found = (await client.get("/Questionnaire", params={"url": questionnaire["url"]})).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [questionnaire["id"]]


async def test_the_phq9_example_response_is_refused_for_its_miscased_codes(client: httpx.AsyncClient, shared_dir: Path) -> None:
    questionnaire = example(shared_dir, QUESTIONNAIRES[0])
    await client.put(f"/Questionnaire/{questionnaire['id']}", json=questionnaire, headers=FHIR_JSON)
    response = example(shared_dir, "QuestionnaireResponse-questionnaireresponse-sdc-profile-example-PHQ9.json")
    refused = await client.put(f"/QuestionnaireResponse/{response['id']}", json=response, headers=FHIR_JSON)
    assert refused.status_code == 422
    located = {issue["expression"][0] for issue in refused.json()["issue"]}
    assert located == {f"QuestionnaireResponse.item.where(linkId='H1/T1').item.where(linkId='H1/T1/Q{n}')" for n in (1, 2, 3)}
    assert all("Not-at-all" in issue["diagnostics"] for issue in refused.json()["issue"])


def test_the_phq9_example_with_its_codes_corrected_passes_and_keeps_its_overridden_total(shared_dir: Path) -> None:
    questionnaire = example(shared_dir, QUESTIONNAIRES[0])
    text = json.dumps(example(shared_dir, "QuestionnaireResponse-questionnaireresponse-sdc-profile-example-PHQ9.json"))
    submission = process_submission(questionnaire, json.loads(text.replace('"Not-at-all"', '"not-at-all"')))
    assert submission.errors == ()
    total = submission.response["item"][0]["item"][-1]
    assert total["answer"] == [{"valueQuantity": {"value": 13, "unit": "{score}"}}]  # not readOnly: the user's value stands


async def test_the_smart_forms_response_is_accepted_against_its_questionnaire(client: httpx.AsyncClient, shared_dir: Path) -> None:
    questionnaire = example(shared_dir, "smartforms-QComplexTemplateExtract.json")
    await client.put(f"/Questionnaire/{questionnaire['id']}", json=questionnaire, headers=FHIR_JSON)
    response = example(shared_dir, "smartforms-QRComplexTemplateExtract.json")
    stored = await client.put(f"/QuestionnaireResponse/{response['id']}", json=response, headers={**FHIR_JSON, "Prefer": "return=OperationOutcome"})
    assert stored.status_code in (200, 201), stored.text
