"""What the pages show, computed from plain FHIR resources (no I/O): the patient's episode on the
pathway, the referrals with their steps, a PlanDefinition as a flowchart, and the pages' words."""

from app.pages.episode import Episode, RedFlag, SbstPoint, TimePoint, episode_of
from app.pages.flowchart import FlowStep, plan_flowchart, readable_condition
from app.pages.labels import LANGUAGES, labels_for, translated
from app.pages.pathway_actions import PlanAdvice, ProposedAction, proposed_actions
from app.pages.referrals import ReferralRow, ReferralStep, referral_rows

__all__ = [
    "LANGUAGES",
    "Episode",
    "FlowStep",
    "PlanAdvice",
    "ProposedAction",
    "RedFlag",
    "ReferralRow",
    "ReferralStep",
    "SbstPoint",
    "TimePoint",
    "episode_of",
    "labels_for",
    "plan_flowchart",
    "proposed_actions",
    "readable_condition",
    "referral_rows",
    "translated",
]
