"""Clinical scenarios across the five pathways, written from shared/pathways.md and the sources.

Each scenario is a patient on a given day of the episode; it names the lbp-action codes that must
be proposed and those that must not, and checks priorities and due dates. T0 is Monday 2 March
2026 in every scenario, so T2 = 16 March, T4 = 30 March, T8 = 27 April.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import pytest

from app.fhir.models import validate_resource
from tests.factories import assessment_response, non_specific_answers, sbst_observation, scored_sbst_response
from tests.pathway_helpers import apply_region, lbp_codes

T0 = date(2026, 3, 2)
T2, T4, T8 = "2026-03-16", "2026-03-30", "2026-04-27"
SUBJECT = "Patient/scenario"

NON_SPECIFIC = non_specific_answers(T0.isoformat())
ROUTINE = {"self-management-advice", "practice-sector-treatment", "sbst-request", "meekijkconsult", "reassess-t2", "reassess-t4", "reassess-t8", "imaging-not-indicated", "mr-lumbar"}


@dataclass(frozen=True)
class Scenario:
    name: str
    region: str
    present: frozenset[str]
    absent: frozenset[str]
    days: int = 0  # since T0
    answers: dict[str, Any] = field(default_factory=dict)
    sbst: tuple[int, int] | None = (2, 1)  # total, distress subscale; None: no SBST at all
    birth_date: str = "1981-06-15"
    assessed: bool = True
    observations: tuple[tuple[str, Any], ...] = ()  # SBST score Observations instead of / beside the response
    priorities: dict[str, str] = field(default_factory=dict)
    due: dict[str, Any] = field(default_factory=dict)
    unknown: frozenset[str] = frozenset()


def s(name: str, region: str, present: str = "", absent: str = "", **options: Any) -> Scenario:
    return Scenario(name, region, frozenset(present.split()), frozenset(absent.split()), **options)


SCENARIOS = [
    # --- red flags and triage (shared sub-plan, every region) ---
    s("nl cauda equina: acute referral only", "nl-zel", "acute-referral", " ".join(ROUTINE), answers={"red_flag_cauda_equina": True}, priorities={"acute-referral": "stat"}),
    s("sjaelland acute paresis: acute referral pre-empts the T0 plan", "dk-sjaelland", "acute-referral", " ".join(ROUTINE) + " consult-report",
      answers={"red_flag_paresis": "acute-severe"}, priorities={"acute-referral": "stat"}),
    s("syddanmark progressive paresis: acute referral", "dk-syddanmark", "acute-referral", " ".join(ROUTINE) + " fast-track", answers={"red_flag_paresis": "progressive"},
      priorities={"acute-referral": "stat"}),
    s("hovedstaden serious pathology: urgent work-up, nothing routine", "dk-hovedstaden", "serious-pathology-workup", "acute-referral " + " ".join(ROUTINE),
      answers={"red_flag_serious_pathology": True}, priorities={"serious-pathology-workup": "urgent"}),
    s("midtjylland cauda equina with suspected malignancy: acute referral and work-up", "dk-midtjylland", "acute-referral serious-pathology-workup", " ".join(ROUTINE),
      answers={"red_flag_cauda_equina": True, "red_flag_serious_pathology": True}, priorities={"acute-referral": "stat", "serious-pathology-workup": "urgent"}),
    s("hovedstaden red flag in a 16-year-old: acute referral outranks the population rule", "dk-hovedstaden", "acute-referral", "not-in-population self-management-advice",
      answers={"red_flag_cauda_equina": True}, birth_date="2009-09-01"),
    s("sjaelland red flag with neck pain: acute referral", "dk-sjaelland", "acute-referral", "reassess-t2 practice-sector-treatment",
      answers={"region_of_pain": "neck", "red_flag_paresis": "acute-severe"}),
    s("nl cauda equina unknown: nothing proposed, the fact is named", "nl-zel", "", "acute-referral " + " ".join(ROUTINE),
      answers={"red_flag_cauda_equina": None}, unknown=frozenset({"red-flag-cauda-equina"})),
    s("syddanmark progressive paresis decides although cauda equina is unknown", "dk-syddanmark", "acute-referral", "self-management-advice",
      answers={"red_flag_cauda_equina": None, "red_flag_paresis": "progressive"}),
    s("sjaelland severe root compression at T0 is not a red flag", "dk-sjaelland", "self-management-advice reassess-t2", "acute-referral mr-lumbar",
      answers={"nerve_root": "severe"}),
    s("midtjylland serious pathology unknown: routine course withheld", "dk-midtjylland", "", "self-management-advice reassess-t2 acute-referral",
      answers={"red_flag_serious_pathology": None}, unknown=frozenset({"red-flag-serious-pathology"})),
    # --- population rules ---
    s("hovedstaden neck pain is outside the programme", "dk-hovedstaden", "not-in-population", "self-management-advice practice-sector-treatment", answers={"region_of_pain": "neck"}),
    s("hovedstaden thoracic pain is outside the programme", "dk-hovedstaden", "not-in-population", "self-management-advice", answers={"region_of_pain": "thoracic"}),
    s("hovedstaden 17 at T0 is outside the programme", "dk-hovedstaden", "not-in-population", "self-management-advice", birth_date="2008-03-03"),
    s("hovedstaden exactly 18 at T0 is inside", "dk-hovedstaden", "self-management-advice", "not-in-population", birth_date="2008-03-02"),
    s("sjaelland includes neck pain", "dk-sjaelland", "self-management-advice practice-sector-treatment reassess-t2", "not-in-population", answers={"region_of_pain": "neck"}),
    s("sjaelland includes thoracic pain", "dk-sjaelland", "self-management-advice", "not-in-population", answers={"region_of_pain": "thoracic"}),
    s("nl neck pain is outside the ZEL pathway", "nl-zel", "not-in-population", "self-management-advice meekijkconsult", answers={"region_of_pain": "neck"}),
    s("nl exactly 18 at T0 is inside", "nl-zel", "self-management-advice", "not-in-population", birth_date="2008-03-02"),
    s("midtjylland 17 at T0 is outside", "dk-midtjylland", "not-in-population", "reassess-t2 self-management-advice", birth_date="2008-03-03"),
    s("syddanmark neck pain is outside", "dk-syddanmark", "not-in-population", "self-management-advice", answers={"region_of_pain": "neck"}),
    s("hovedstaden pain region unknown: undecided, named", "dk-hovedstaden", "", "not-in-population self-management-advice",
      answers={"region_of_pain": None}, unknown=frozenset({"region-of-pain"})),
    s("hovedstaden suspected stenosis with low back pain is inside", "dk-hovedstaden", "self-management-advice", "not-in-population", answers={"stenosis": True}),
    # --- NL ZEL ---
    s("nl booked visit, nothing yet: STarT Back before the consult", "nl-zel", "sbst-request", "self-management-advice acute-referral meekijkconsult",
      assessed=False, sbst=None, priorities={"sbst-request": "routine"}),
    s("nl SBST done before the consult: wait for the GP's assessment", "nl-zel", "", "sbst-request self-management-advice", assessed=False,
      unknown=frozenset({"red-flag-cauda-equina", "red-flag-paresis", "red-flag-serious-pathology"})),
    s("nl consult without SBST: send it, advise, no imaging", "nl-zel", "sbst-request self-management-advice imaging-not-indicated", "meekijkconsult", sbst=None),
    s("nl SBST high (subscale 4): Meekijkconsult and report", "nl-zel", "meekijkconsult consult-report self-management-advice", "sbst-request", sbst=(6, 4)),
    s("nl SBST medium (subscale 3): no Meekijkconsult", "nl-zel", "self-management-advice", "meekijkconsult consult-report", sbst=(6, 3)),
    s("nl high risk from the risk Observation", "nl-zel", "meekijkconsult", "sbst-request", sbst=None, observations=(("91352-5", "high"), ("91351-7", 7))),
    s("nl subscale Observation of 4 without a risk level", "nl-zel", "meekijkconsult", "sbst-request", sbst=None, observations=(("91350-9", 4), ("91351-7", 6))),
    s("nl exactly 4 weeks: imaging advice no longer given", "nl-zel", "self-management-advice", "imaging-not-indicated", days=28),
    s("nl 27 days: imaging is not indicated", "nl-zel", "imaging-not-indicated", "", days=27),
    # --- DK Hovedstaden ---
    s("hovedstaden low risk, no impairment: advice only", "dk-hovedstaden", "self-management-advice imaging-not-indicated", "practice-sector-treatment spine-centre-referral municipal-prevention"),
    s("hovedstaden considerable impairment: practice-sector treatment", "dk-hovedstaden", "practice-sector-treatment", "spine-centre-referral",
      answers={"considerable_impairment": True}, priorities={"practice-sector-treatment": "routine"}),
    s("hovedstaden SBST medium: practice-sector treatment", "dk-hovedstaden", "practice-sector-treatment", "", sbst=(5, 2)),
    s("hovedstaden options exhausted: hospital back unit", "dk-hovedstaden", "spine-centre-referral", "", days=42, answers={"options_exhausted": True}),
    s("hovedstaden 13 weeks of pain with psychosocial needs: municipal rehabilitation", "dk-hovedstaden", "municipal-prevention", "",
      answers={"pain_duration_weeks": 13, "multidisciplinary_need": True}),
    s("hovedstaden exactly 12 weeks of pain: no municipal rehabilitation yet", "dk-hovedstaden", "self-management-advice", "municipal-prevention",
      answers={"pain_duration_weeks": 12, "multidisciplinary_need": True}),
    # --- DK Midtjylland ---
    s("midtjylland T0 without SBST: stratify, advise, stop blocks at T2 T4 T8", "dk-midtjylland",
      "sbst-request self-management-advice reassess-t2 reassess-t4 reassess-t8 imaging-not-indicated", "extended-assessment practice-sector-treatment",
      sbst=None, due={"reassess-t2": T2, "reassess-t4": T4, "reassess-t8": T8}),
    s("midtjylland SBST medium: practice-sector treatment", "dk-midtjylland", "practice-sector-treatment", "sbst-request", days=7, sbst=(5, 3)),
    s("midtjylland SBST low: no practice-sector treatment", "dk-midtjylland", "self-management-advice", "practice-sector-treatment sbst-request", days=7),
    s("midtjylland nerve root at T2 not improving: extended assessment with feedback", "dk-midtjylland", "extended-assessment consult-report reassess-t4 reassess-t8",
      "reassess-t2", days=14, answers={"nerve_root": "mild", "course": "no-significant-progress"}, due={"reassess-t4": T4}),
    s("midtjylland nerve root before T2: not yet", "dk-midtjylland", "reassess-t2", "extended-assessment", days=13, answers={"nerve_root": "mild", "course": "worse"}),
    s("midtjylland non-specific exactly at T4 without progress: extended assessment", "dk-midtjylland", "extended-assessment", "reassess-t4",
      days=28, answers={"course": "no-significant-progress"}, due={"reassess-t8": T8}),
    s("midtjylland non-specific at 27 days: not yet", "dk-midtjylland", "reassess-t4", "extended-assessment", days=27, answers={"course": "no-significant-progress"}),
    s("midtjylland T4 improving but on sick leave (complex): extended assessment", "dk-midtjylland", "extended-assessment", "", days=30, answers={"sick_leave": "current"}),
    s("midtjylland T4 improving, at work: no extended assessment", "dk-midtjylland", "reassess-t8", "extended-assessment", days=30),
    s("midtjylland T8 not improving: referral to secondary care", "dk-midtjylland", "spine-centre-referral", "reassess-t8 reassess-t4",
      days=56, answers={"course": "worse"}),
    s("midtjylland after T8 improving: no referral", "dk-midtjylland", "self-management-advice", "spine-centre-referral reassess-t8", days=63),
    # --- DK Sjælland ---
    s("sjaelland T0: conservative plan with contacts at T2 T4 T8", "dk-sjaelland",
      "self-management-advice practice-sector-treatment consult-report reassess-t2 reassess-t4 reassess-t8 imaging-not-indicated", "mr-lumbar spine-centre-referral",
      due={"reassess-t2": {"start": T2, "end": T4}, "reassess-t4": T4, "reassess-t8": T8}),
    s("sjaelland T2 severe root compression: MR, possibly Rygheden", "dk-sjaelland", "mr-lumbar spine-centre-referral reassess-t4", "reassess-t2 imaging-not-indicated",
      days=14, answers={"nerve_root": "severe"}),
    s("sjaelland T2 mild root compression: conservative, no imaging", "dk-sjaelland", "imaging-not-indicated practice-sector-treatment", "mr-lumbar",
      days=15, answers={"nerve_root": "mild"}),
    s("sjaelland exactly T4 without significant progress: MR", "dk-sjaelland", "mr-lumbar spine-centre-referral reassess-t8", "imaging-not-indicated reassess-t4",
      days=28, answers={"course": "no-significant-progress"}),
    s("sjaelland 27 days without progress: no MR yet", "dk-sjaelland", "reassess-t4 imaging-not-indicated", "mr-lumbar", days=27, answers={"course": "no-significant-progress"}),
    s("sjaelland T4 without progress, MR already done: Rygheden only", "dk-sjaelland", "spine-centre-referral", "mr-lumbar",
      days=30, answers={"course": "no-significant-progress", "mr_done": True}),
    s("sjaelland neck pain at T4 without progress: Rygheden, no lumbar MR", "dk-sjaelland", "spine-centre-referral", "mr-lumbar",
      days=30, answers={"region_of_pain": "neck", "course": "no-significant-progress"}),
    s("sjaelland T8 not better: MR and Rygheden", "dk-sjaelland", "mr-lumbar spine-centre-referral", "practice-sector-treatment reassess-t8",
      days=56, answers={"course": "worse"}),
    s("sjaelland T8 improving: municipal prevention offer, course continues", "dk-sjaelland", "municipal-prevention practice-sector-treatment", "mr-lumbar spine-centre-referral",
      days=58),
    s("sjaelland complex chronic (group 4), clarified: pain clinic", "dk-sjaelland", "pain-centre-referral municipal-prevention", "",
      days=7, answers={"health_function_complexity": "high", "contextual_complexity": "high", "pain_duration_weeks": 20, "diagnostically_clarified": True, "mr_done": True}),
    s("sjaelland long-lasting with contextual complexity: MR and surgical assessment", "dk-sjaelland", "mr-lumbar surgical-assessment municipal-prevention", "pain-centre-referral",
      days=7, answers={"contextual_complexity": "high", "pain_duration_weeks": 16}),
    s("sjaelland options exhausted within 8 weeks: municipal offer", "dk-sjaelland", "municipal-prevention", "", days=21, answers={"options_exhausted": True}),
    s("sjaelland T4 without progress, MR status unknown: Rygheden, MR named as unknown", "dk-sjaelland", "spine-centre-referral", "mr-lumbar",
      days=29, answers={"course": "no-significant-progress", "mr_done": None}, unknown=frozenset({"mr-done"})),
    s("sjaelland T4 without progress, pain duration and context unknown: MR all the same", "dk-sjaelland", "mr-lumbar spine-centre-referral", "surgical-assessment",
      days=28, answers={"course": "no-significant-progress", "pain_duration_weeks": None, "contextual_complexity": None}),
    s("sjaelland long-lasting and T4 without progress: one MR, surgical assessment", "dk-sjaelland", "mr-lumbar spine-centre-referral surgical-assessment", "",
      days=28, answers={"course": "no-significant-progress", "pain_duration_weeks": 20, "contextual_complexity": "high"}),
    # --- DK Syddanmark ---
    s("syddanmark uncomplicated: practice sector and self-management", "dk-syddanmark", "self-management-advice practice-sector-treatment imaging-not-indicated",
      "reassess-t4 mr-lumbar spine-centre-referral surgical-assessment fast-track"),
    s("syddanmark nerve root: monitor, reassess at 4 weeks", "dk-syddanmark", "reassess-t4", "spine-centre-referral", days=7, answers={"nerve_root": "mild"}, due={"reassess-t4": T4}),
    s("syddanmark nerve root exactly 4 weeks without improvement: Rygcenter or MR", "dk-syddanmark", "spine-centre-referral mr-lumbar", "surgical-assessment reassess-t4",
      days=28, answers={"nerve_root": "mild", "course": "no-significant-progress"}),
    s("syddanmark stenosis worse at 5 weeks: Rygcenter, MR, surgical assessment", "dk-syddanmark", "spine-centre-referral mr-lumbar surgical-assessment", "",
      days=35, answers={"stenosis": True, "course": "worse"}),
    s("syddanmark severe root at 3 weeks: not before 4 weeks", "dk-syddanmark", "reassess-t4", "spine-centre-referral mr-lumbar surgical-assessment",
      days=21, answers={"nerve_root": "severe", "course": "worse"}),
    s("syddanmark non-specific without progress: never surgery, no MR", "dk-syddanmark", "practice-sector-treatment", "surgical-assessment mr-lumbar spine-centre-referral",
      days=42, answers={"course": "no-significant-progress"}),
    s("syddanmark sick leave expected over 8 weeks: FAST track", "dk-syddanmark", "fast-track", "", answers={"sick_leave": "expected-over-8-weeks"}),
    s("syddanmark pain-centre criteria all met", "dk-syddanmark", "pain-centre-referral", "", days=70,
      answers={"pain_duration_weeks": 30, "options_exhausted": True, "diagnostically_clarified": True, "considerable_impairment": True, "multidisciplinary_need": True}),
    s("syddanmark pain of 26 weeks is not more than 6 months", "dk-syddanmark", "municipal-prevention", "pain-centre-referral", days=70,
      answers={"pain_duration_weeks": 26, "options_exhausted": True, "diagnostically_clarified": True, "considerable_impairment": True, "multidisciplinary_need": True}),
    s("syddanmark course tried for 8 weeks: municipal prevention offer", "dk-syddanmark", "municipal-prevention", "pain-centre-referral", days=56),
]


def _run(scenario: Scenario) -> Any:
    patient = {"resourceType": "Patient", "id": SUBJECT.split("/")[1], "birthDate": scenario.birth_date}
    data: list[dict[str, Any]] = []
    if scenario.assessed:
        data.append(assessment_response(SUBJECT, (T0 + timedelta(days=scenario.days)).isoformat(), **{**NON_SPECIFIC, **scenario.answers}))
    if scenario.sbst is not None:
        data.append(scored_sbst_response(SUBJECT, *scenario.sbst, authored=(T0 - timedelta(days=1)).isoformat()))
    data += [sbst_observation(SUBJECT, code, value) for code, value in scenario.observations]
    return apply_region(scenario.region, patient, *data, today=T0 + timedelta(days=scenario.days))


def test_there_are_at_least_fifty_scenarios_covering_every_region() -> None:
    assert len(SCENARIOS) >= 50
    assert len({s.name for s in SCENARIOS}) == len(SCENARIOS)
    assert {s.region for s in SCENARIOS} == {"nl-zel", "dk-hovedstaden", "dk-midtjylland", "dk-sjaelland", "dk-syddanmark"}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(scenario: Scenario) -> None:
    applied = _run(scenario)
    codes = applied.codes()
    assert scenario.present <= codes, f"missing {sorted(scenario.present - codes)}; got {sorted(codes)}"
    assert not scenario.absent & codes, f"unexpected {sorted(scenario.absent & codes)}"
    for code, priority in scenario.priorities.items():
        assert applied.priority(code) == priority
    for code, due in scenario.due.items():
        assert applied.due(code) == due
    assert scenario.unknown <= applied.unknown(), applied.unknown()
    assert not [i for i in applied.issues() if i["severity"] in ("error", "fatal")], applied.issues()
    validate_resource(applied.bundle)  # every proposal is a valid R4 resource
    proposed = [code for request in applied.requests() for code in sorted(lbp_codes(request.get("code") or request.get("category") or []))]
    assert len(proposed) == len(set(proposed)), f"proposed twice: {proposed}"  # one rule fires per need
