"""The CDS Services BackPath offers, as data. Spec: https://cds-hooks.hl7.org/2.0/#discovery

Each service names its hook and the prefetch templates of the data it needs, and what that data is
for: the Patient, the facts of the pathway (STarT Back response and score Observations, the latest LBP
assessments), or what the cards show beside them (open ServiceRequests and Tasks, active
Conditions). The cards themselves come from the regional PlanDefinition: a service only chooses the
hook, which the plan's `named-event` triggers answer to.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from app.pathway.facts import ASSESSMENT_QUESTIONNAIRE, LOINC, SBST_CODES, SBST_QUESTIONNAIRE

__all__ = ["SERVICES", "CdsService", "Prefetch", "PrefetchRole", "discovery_response", "find_service"]


class PrefetchRole(Enum):
    """What the data of a prefetch key is used for."""

    PATIENT = "patient"  # the subject of the pathway
    FACTS = "facts"  # responses and Observations the pathway facts are derived from
    OPEN_REQUESTS = "open-requests"  # `%open-requests`; also keeps a card from proposing them twice
    CONDITIONS = "conditions"  # `%conditions`


@dataclass(frozen=True)
class Prefetch:
    """One prefetch template. A `required` key that the client left out and that cannot be fetched
    makes the call fail with 412; a missing optional one only leaves its input empty."""

    key: str
    template: str
    role: PrefetchRole
    required: bool


@dataclass(frozen=True)
class CdsService:
    id: str
    hook: str
    title: str
    description: str
    prefetch: tuple[Prefetch, ...]
    usage_requirements: str
    shows_status: bool = False  # a first info card saying where the patient is on the pathway

    def definition(self) -> dict[str, Any]:
        """The service as the discovery response lists it."""
        return {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "prefetch": {p.key: p.template for p in self.prefetch},
            "usageRequirements": self.usage_requirements,
        }


_SUBJECT = "subject=Patient/{{context.patientId}}"
_SBST_SCORES = ",".join(f"{LOINC}|{code}" for code in SBST_CODES)

_PATIENT = Prefetch("patient", "Patient/{{context.patientId}}", PrefetchRole.PATIENT, required=True)
_ASSESSMENTS = Prefetch(
    "lbp-assessments",  # a few: the episode start (T0) may be in an earlier assessment
    f"QuestionnaireResponse?{_SUBJECT}&questionnaire={ASSESSMENT_QUESTIONNAIRE}&status=completed,amended&_sort=-authored&_count=5",
    PrefetchRole.FACTS,
    required=True,
)
_SBST = Prefetch(
    "sbst-response",
    f"QuestionnaireResponse?{_SUBJECT}&questionnaire={SBST_QUESTIONNAIRE}&status=completed,amended&_sort=-authored&_count=1",
    PrefetchRole.FACTS,
    required=True,
)
_SBST_OBSERVATIONS = Prefetch(
    "sbst-scores",
    f"Observation?{_SUBJECT}&code={_SBST_SCORES}&status=final,amended,corrected&_sort=-date&_count=3",
    PrefetchRole.FACTS,
    required=True,
)
_SERVICE_REQUESTS = Prefetch(
    "open-service-requests", f"ServiceRequest?{_SUBJECT}&status=draft,active,on-hold", PrefetchRole.OPEN_REQUESTS, required=False
)
_TASKS = Prefetch(
    "open-tasks",
    f"Task?{_SUBJECT}&status=draft,requested,received,accepted,ready,in-progress,on-hold",
    PrefetchRole.OPEN_REQUESTS,
    required=False,
)
_CONDITIONS = Prefetch("conditions", f"Condition?{_SUBJECT}&clinical-status=active", PrefetchRole.CONDITIONS, required=False)

_USAGE = (
    "Send the prefetch, or fhirServer (with fhirAuthorization) so the service can fetch what is missing; without "
    "either the call answers 412. The regional pathway is the deployment's (BACKPATH_CDS_PATHWAY) unless the request "
    "names one in extension 'dev.backpath.pathway' (nl-zel, dk-hovedstaden, dk-midtjylland, dk-sjaelland, "
    "dk-syddanmark); texts follow 'dev.backpath.language' or Accept-Language where translations exist."
)

SERVICES: tuple[CdsService, ...] = (
    CdsService(
        id="lbp-pathway",
        hook="patient-view",
        title="BackPath low-back-pain pathway",
        description=(
            "Where the patient is on the regional low-back-pain pathway and which actions are due: red flags first "
            "(critical), then each pathway action as a card with the ServiceRequest or Task it would create."
        ),
        prefetch=(_PATIENT, _SBST, _SBST_OBSERVATIONS, _ASSESSMENTS, _SERVICE_REQUESTS, _TASKS, _CONDITIONS),
        usage_requirements=_USAGE,
        shows_status=True,
    ),
    CdsService(
        id="lbp-imaging-order-select",
        hook="order-select",
        title="BackPath imaging advice for low back pain (order-select)",
        description=(
            "Checks a selected MR of the lumbar spine against the pathway: a warning when imaging is not indicated "
            "yet (with a suggestion to remove the order), a critical acute-referral card for red flags."
        ),
        prefetch=(_PATIENT, _ASSESSMENTS, _CONDITIONS),
        usage_requirements=_USAGE,
    ),
    CdsService(
        id="lbp-imaging-order-sign",
        hook="order-sign",
        title="BackPath imaging advice for low back pain (order-sign)",
        description=(
            "Checks the MR of the lumbar spine about to be signed against the pathway: a warning when imaging is not "
            "indicated yet (with a suggestion to remove the order), a critical acute-referral card for red flags."
        ),
        prefetch=(_PATIENT, _ASSESSMENTS, _CONDITIONS),
        usage_requirements=_USAGE,
    ),
)


def find_service(service_id: str) -> CdsService | None:
    return next((s for s in SERVICES if s.id == service_id), None)


def discovery_response() -> dict[str, Any]:
    """`GET /cds-services`: every service with its hook and prefetch templates."""
    return {"services": [service.definition() for service in SERVICES]}
