"""A real run: a `backpath serve` process with the pathway content loaded at start-up; over loopback
HTTP we post a patient, an SBST response and an LBP assessment, then call `$apply` for each region."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import httpx
import pytest

from tests.factories import (
    FHIR_JSON,
    assessment_response,
    non_specific_answers,
    parameters,
    patient,
    scored_sbst_response,
    unique,
)
from tests.pathway_helpers import Applied

TODAY = date.today()

# region, weeks since T0, SBST (total, subscale), assessment changes, codes expected, codes not expected
REGIONS = [
    ("nl-zel", 0, (6, 4), {}, {"meekijkconsult", "consult-report", "self-management-advice"}, {"sbst-request", "acute-referral"}),
    ("dk-hovedstaden", 1, (2, 1), {"considerable_impairment": True}, {"practice-sector-treatment", "self-management-advice"}, {"not-in-population"}),
    ("dk-midtjylland", 0, (5, 2), {}, {"reassess-t2", "reassess-t4", "reassess-t8", "practice-sector-treatment"}, {"extended-assessment"}),
    ("dk-sjaelland", 4, (2, 1), {"course": "no-significant-progress"}, {"mr-lumbar", "spine-centre-referral", "reassess-t8"}, {"reassess-t4"}),
    ("dk-syddanmark", 5, (3, 2), {"nerve_root": "mild", "course": "worse"}, {"spine-centre-referral", "mr-lumbar"}, {"surgical-assessment"}),
]


def _post(http: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post(path, json=body, headers=FHIR_JSON)
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


@pytest.mark.parametrize(("region", "weeks", "sbst", "changes", "present", "absent"), REGIONS, ids=[r[0] for r in REGIONS])
def test_apply_each_region_over_http(
    live_server: str, region: str, weeks: int, sbst: tuple[int, int], changes: dict[str, Any], present: set[str], absent: set[str]
) -> None:
    t0 = TODAY - timedelta(weeks=weeks)
    with httpx.Client(base_url=live_server, timeout=30) as http:
        created = _post(http, "/Patient", patient(family=unique("Live"), birthDate="1979-09-09"))
        subject = f"Patient/{created['id']}"
        _post(http, "/QuestionnaireResponse", scored_sbst_response(subject, *sbst, authored=t0.isoformat()))
        _post(http, "/QuestionnaireResponse", assessment_response(subject, TODAY.isoformat(), **non_specific_answers(t0.isoformat(), pain_duration_weeks=3, **changes)))

        care_plan = http.get(f"/PlanDefinition/{region}/$apply", params={"subject": subject})
        assert care_plan.status_code == 200, care_plan.text
        assert care_plan.json()["resourceType"] == "CarePlan"
        from_care_plan = Applied({"entry": [{"resource": r} for r in care_plan.json()["contained"]]})

        bundle = _post(http, "/PlanDefinition/$r5.apply", parameters(("url", f"http://backpath.dev/fhir/PlanDefinition/{region}"), ("subject", subject)))
        applied = Applied(bundle)
    assert applied.codes() == from_care_plan.codes()
    assert present <= applied.codes(), sorted(applied.codes())
    assert not absent & applied.codes()
    if region == "dk-midtjylland":
        assert applied.due("reassess-t2") == (t0 + timedelta(weeks=2)).isoformat()
    if region == "dk-sjaelland":
        assert applied.request("spine-centre-referral")["performer"][0]["reference"] == "Organization/dk-rygheden"
