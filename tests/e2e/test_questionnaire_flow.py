"""The questionnaire flow against a real `backpath serve` process over loopback HTTP: an EHR posts
an SBST response, reads back its scores, extracts and stores the score Observations, and prefills
the next LBP assessment."""

from __future__ import annotations

import httpx

from tests.factories import FHIR_JSON, LBP_URL, lbp_assessment, lbp_code, patient, sbst_response, unique


def test_post_score_extract_and_populate_over_http(live_server: str) -> None:
    with httpx.Client(base_url=live_server, headers=FHIR_JSON, timeout=30) as http:
        subject = f"Patient/{http.post('/Patient', json=patient(family=unique('Flow'))).json()['id']}"
        posted = http.post("/QuestionnaireResponse", json=sbst_response([True] * 6 + [False] * 2, "very-much", subject={"reference": subject},
                                                                       authored="2026-11-30T08:00:00Z"))
        assert posted.status_code == 201
        risk = next(i for i in posted.json()["item"] if i["linkId"] == "risk-level")
        assert risk["answer"][0]["valueCoding"]["code"] == "LA8982-6"  # total 7, distress 3 (items 5, 6, 9): medium

        extracted = http.post(f"/QuestionnaireResponse/{posted.json()['id']}/$extract?persist=true", json={"resourceType": "Parameters"})
        assert extracted.status_code == 200
        stored = http.get("/Observation", params={"subject": subject, "code": "http://loinc.org|91351-7"}).json()
        assert [e["resource"]["valueInteger"] for e in stored["entry"]] == [7]

        assessment = lbp_assessment({"episode-start": {"valueDate": "2026-11-30"}, "nerve-root": lbp_code("mild")}, subject={"reference": subject},
                                    authored="2026-11-30T08:10:00Z")
        assert http.post("/QuestionnaireResponse", json=assessment).status_code == 201
        populated = http.get("/Questionnaire/$populate", params={"questionnaire": LBP_URL, "subject": subject})
        response = populated.json()["parameter"][0]["resource"]
        assert next(i for i in response["item"] if i["linkId"] == "episode-start")["answer"] == [{"valueDate": "2026-11-30"}]
