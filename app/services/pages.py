"""The data of the clinician's pages, gathered through the same use cases the FHIR routes call and
held to the caller's access: read, search, history and `PlanDefinition/$apply` (via the operation
registry, so its access rules apply too). Nothing here reads the store directly."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import orjson

from app.fhir.outcome import ErrorCategory, FhirError
from app.pages import (
    Episode,
    FlowStep,
    PlanAdvice,
    ReferralRow,
    episode_of,
    plan_flowchart,
    proposed_actions,
    referral_rows,
)
from app.pathway.facts import ASSESSMENT_QUESTIONNAIRE
from app.security.access import Access
from app.services import history, resources
from app.services.context import FhirContext
from app.services.operations import OperationCall, OperationRegistry
from app.services.search import search

__all__ = ["ClinicianView", "PathwayView", "Region", "clinician_view", "pathway_view"]

_INTERNAL_BASE = "urn:backpath:pages"
_MAX_RESPONSES = "200"
_ISO_3166 = "urn:iso:std:iso:3166"


@dataclass(frozen=True)
class Region:
    plan_id: str
    title: str
    country: str | None


@dataclass(frozen=True)
class ClinicianView:
    patient: dict[str, Any]
    episode: Episode
    advice: PlanAdvice
    plan: Region
    patient_region: str | None  # the plan the patient's address points to, if any
    regions: tuple[Region, ...]
    referrals: tuple[ReferralRow, ...]


@dataclass(frozen=True)
class PathwayView:
    plan: dict[str, Any]
    steps: tuple[FlowStep, ...]


async def clinician_view(
    context: FhirContext,
    operations: OperationRegistry,
    access: Access,
    patient_id: str,
    region: str | None,
    default_region: str,
    language: str,
    today: date,
) -> ClinicianView:
    """Everything the clinician view shows for one patient, seen with the caller's `access`."""
    patient = _content(await resources.read(context, "Patient", patient_id, access))
    subject = f"Patient/{patient_id}"
    responses = await _matches(context, access, "QuestionnaireResponse", [("subject", subject), ("_count", _MAX_RESPONSES)])
    assessment = await _by_url(context, access, "Questionnaire", ASSESSMENT_QUESTIONNAIRE)
    regions = await _regions(context, access)
    own = _region_of(patient, regions)
    chosen = next((r for r in regions if r.plan_id == (region or own or default_region)), None)
    if chosen is None:
        raise FhirError(ErrorCategory.NOT_FOUND, f"There is no regional pathway '{region or own or default_region}'")
    call = OperationCall("apply", "PlanDefinition", chosen.plan_id, "GET", None, [("subject", subject), ("userLanguage", language)])
    care_plan = (await operations.invoke(context, call, access)).resource
    return ClinicianView(
        patient=patient,
        episode=episode_of(subject, patient, responses, assessment[0] if assessment else None, language, today),
        advice=proposed_actions(care_plan),
        plan=chosen,
        patient_region=own,
        regions=regions,
        referrals=await _referrals(context, access, subject),
    )


async def pathway_view(context: FhirContext, access: Access, plan_id: str, language: str) -> PathwayView:
    """A PlanDefinition with every ActivityDefinition and nested PlanDefinition it names, as steps."""
    plan = _content(await resources.read(context, "PlanDefinition", plan_id, access))
    definitions: dict[str, dict[str, Any]] = {}
    pending = _canonicals(plan)
    while pending:
        for kind in ("ActivityDefinition", "PlanDefinition"):
            for found in await _matches(context, access, kind, [("url", ",".join(sorted(pending))), ("_count", "200")]):
                definitions[str(found.get("url"))] = found
        pending = {c for d in definitions.values() for c in _canonicals(d)} - set(definitions) - pending
    return PathwayView(plan, plan_flowchart(plan, definitions, language))


async def _referrals(context: FhirContext, access: Access, subject: str) -> tuple[ReferralRow, ...]:
    tasks = await _matches(context, access, "Task", [("subject", subject), ("_count", "100")])
    tracked = [t for t in tasks if str((t.get("focus") or {}).get("reference") or "").startswith("ServiceRequest/")]
    if not tracked:
        return ()
    requests = {f"ServiceRequest/{r['id']}": r for r in await _matches(context, access, "ServiceRequest", [("subject", subject), ("_count", "100")])}
    versions = {}
    for task in tracked:
        page = orjson.loads(orjson.dumps(await history.history(context, _INTERNAL_BASE, "Task", str(task["id"]), [("_count", "50")], access)))
        versions[str(task["id"])] = [e["resource"] for e in reversed(page.get("entry") or []) if e.get("resource")]
    names = {str((t.get("owner") or {}).get("reference") or "") for t in tracked} | {
        str(p.get("reference")) for r in requests.values() for p in r.get("performer") or [] if p.get("reference")
    }
    ids = sorted(n.removeprefix("Organization/") for n in names if n.startswith("Organization/"))
    displays = {}
    if ids:
        for organization in await _matches(context, access, "Organization", [("_id", ",".join(ids))]):
            displays[f"Organization/{organization['id']}"] = str(organization.get("name") or organization["id"])
    return referral_rows(tracked, versions, requests, displays)


async def _regions(context: FhirContext, access: Access) -> tuple[Region, ...]:
    plans = await _matches(context, access, "PlanDefinition", [("jurisdiction", f"{_ISO_3166}|NL,{_ISO_3166}|DK"), ("_count", "50")])
    regions = [Region(str(p["id"]), str(p.get("title") or p["id"]), _country(p)) for p in plans]
    return tuple(sorted(regions, key=lambda r: (r.country != "NL", r.plan_id)))


def _region_of(patient: dict[str, Any], regions: Sequence[Region]) -> str | None:
    """The regional plan the patient's address names: the only plan of its country, or the Danish
    region whose name the address's state or district carries."""
    for address in patient.get("address") or []:
        country = str(address.get("country") or "").upper()[:2]
        candidates = [r for r in regions if r.country == country]
        if len(candidates) == 1:
            return candidates[0].plan_id
        words = _plain(f"{address.get('state') or ''} {address.get('district') or ''}")
        for region in candidates:
            if region.plan_id.split("-", 1)[-1] in words:
                return region.plan_id
    return None


def _plain(text: str) -> str:
    folded = text.lower().replace("æ", "ae").replace("ø", "oe").replace("å", "aa")
    return unicodedata.normalize("NFKD", folded).encode("ascii", "ignore").decode()


def _country(plan: dict[str, Any]) -> str | None:
    for jurisdiction in plan.get("jurisdiction") or []:
        for coding in jurisdiction.get("coding") or []:
            if coding.get("system") == _ISO_3166:
                return str(coding.get("code"))
    return None


def _canonicals(resource: dict[str, Any]) -> set[str]:
    found = set()
    stack = list(resource.get("action") or [])
    while stack:
        action = stack.pop()
        if action.get("definitionCanonical"):
            found.add(str(action["definitionCanonical"]).split("|")[0])
        stack.extend(action.get("action") or [])
    return found


async def _by_url(context: FhirContext, access: Access, resource_type: str, url: str) -> list[dict[str, Any]]:
    return await _matches(context, access, resource_type, [("url", url)])


async def _matches(context: FhirContext, access: Access, resource_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    # Search entries carry the stored bytes as they are: parse them once here.
    bundle = orjson.loads(orjson.dumps(await search(context, _INTERNAL_BASE, resource_type, params, access=access)))
    return [e["resource"] for e in bundle.get("entry") or [] if (e.get("search") or {}).get("mode") == "match"]


def _content(stored: Any) -> dict[str, Any]:
    content: dict[str, Any] = orjson.loads(stored.content or b"{}")
    return content
