"""Rendering an `$apply` result: ids, references, and the two shapes of the answer.

R4 `$apply` (https://hl7.org/fhir/R4/plandefinition-operation-apply.html) returns a CarePlan whose one
activity is the RequestGroup, everything it made contained; the CPG / R5 form
(https://hl7.org/fhir/uv/cpg/OperationDefinition-cpg-plandefinition-apply.html) a collection Bundle,
RequestGroup first. Ids come from readable keys (the action id) and are made unique within the result,
so one ActivityDefinition serving several actions gives several requests.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from app.fhir.outcome import operation_outcome
from app.pathway.apply import ActionDraft, ApplyInput, GroupDraft, PlanResult, Proposal, safe_id
from app.pathway.timing import TIMING_KEYS, due_elements, shift

__all__ = ["MESSAGES_EXTENSION", "PERTAINS_TO_GOAL_EXTENSION", "care_plan", "request_bundle"]

MESSAGES_EXTENSION = "http://hl7.org/fhir/StructureDefinition/cqf-messages"
PERTAINS_TO_GOAL_EXTENSION = "http://hl7.org/fhir/StructureDefinition/resource-pertainsToGoal"


class _Ids:
    """Resource ids from readable keys, made unique within one result."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def take(self, key: str) -> str:
        base = safe_id(key)
        candidate, n = base, 1
        while candidate in self.taken:
            n += 1
            suffix = f"-{n}"
            candidate = base[: 64 - len(suffix)] + suffix
        self.taken.add(candidate)
        return candidate


class _Renderer:
    def __init__(self, result: PlanResult, contained: bool) -> None:
        self.result = result
        self.contained = contained
        self.ids = _Ids()
        self.resources: list[dict[str, Any]] = []

    def ref(self, resource_type: str, resource_id: str) -> dict[str, str]:
        return {"reference": f"#{resource_id}" if self.contained else f"{resource_type}/{resource_id}"}

    def group(self, group: GroupDraft) -> dict[str, Any]:
        request = self.result.request
        rg: dict[str, Any] = {"resourceType": "RequestGroup", "id": self.ids.take(group.key), **_proposed(group.plan, request)}
        self.resources.append(rg)
        actions = [self.action(a, rg) for a in group.actions]
        if actions:
            rg["action"] = actions
        _related_timing(rg)
        return rg

    def action(self, draft: ActionDraft, rg: Mapping[str, Any]) -> dict[str, Any]:
        element = dict(draft.element)
        target = draft.target
        if isinstance(target, Proposal):
            resource = {**target.resource, "id": self.ids.take(target.key)}
            resource_type = str(resource["resourceType"])
            if resource_type != "RequestGroup":
                resource["basedOn"] = [self.ref("RequestGroup", str(rg["id"]))]
            self.resources.append(resource)
            element["resource"] = self.ref(resource_type, resource["id"])
        elif isinstance(target, GroupDraft):
            nested = self.group(target)
            element["resource"] = self.ref("RequestGroup", nested["id"])
        elif isinstance(target, str):
            element["resource"] = {"reference": target}
        if draft.children:
            element["action"] = [self.action(child, rg) for child in draft.children]
        return element


def _proposed(definition: Mapping[str, Any], request: ApplyInput) -> dict[str, Any]:
    """What the CarePlan and each RequestGroup say alike: the definition they instantiate, a
    proposal, for whom, in which encounter, by whom (CR: the practitioner, else the organization)."""
    header: dict[str, Any] = {"instantiatesCanonical": [definition["url"]]} if definition.get("url") else {}
    header.update(status="active", intent="proposal", subject={"reference": request.subject})
    if request.encounter:
        header["encounter"] = {"reference": request.encounter}
    author = request.practitioner or request.organization
    if author:
        header["author"] = {"reference": author}
    return header


def _related_timing(rg: dict[str, Any]) -> None:
    """relatedAction: drop links to actions that did not apply; an action without a time of its
    own gets one from the action it is related to (start/end ± offset)."""
    actions = {str(a["id"]): a for a in _walk(rg.get("action") or []) if "id" in a}
    for action in _walk(rg.get("action") or []):
        related = [r for r in action.get("relatedAction") or [] if r.get("actionId") in actions]
        if not related:
            action.pop("relatedAction", None)
            continue
        action["relatedAction"] = related
        if any(k in action for k in TIMING_KEYS):
            continue
        for link in related:
            moment = _moment(actions[link["actionId"]], str(link.get("relationship") or ""))
            offset = link.get("offsetDuration") or link.get("offsetRange") or {}
            relationship = str(link.get("relationship") or "")
            sign = -1 if relationship.startswith("before") else 0 if relationship.startswith("concurrent") else 1
            if moment is not None:
                when = shift(moment, offset, sign) if offset and sign else moment[:10]
                if when:
                    action["timingDateTime"] = when
                    break


def _moment(action: Mapping[str, Any], relationship: str) -> str | None:
    if "timingDateTime" in action:
        return str(action["timingDateTime"])
    period = action.get("timingPeriod") or {}
    value = period.get("end") if relationship.endswith("end") else period.get("start")
    return str(value) if value else None


def _walk(actions: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for action in actions:
        yield action
        yield from _walk(action.get("action") or [])


def _render(result: PlanResult, contained: bool) -> tuple[_Renderer, dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    renderer = _Renderer(result, contained)
    rg = renderer.group(result.group)
    _propagate_due_dates(renderer.resources)
    goals = [{**goal, "id": renderer.ids.take(str(n))} for n, goal in enumerate(result.group.goals, start=1)]
    if result.unknown:
        rg["note"] = [{"text": "Facts not known (answering them could change this plan): " + ", ".join(sorted(result.unknown))}]
    outcome = None
    if result.issues:
        outcome = {**operation_outcome(list(result.issues)), "id": renderer.ids.take("outcome")}
    return renderer, rg, goals, outcome


def _propagate_due_dates(resources: list[dict[str, Any]]) -> None:
    """A time an action got from a related action reaches the request it generated."""
    by_ref: dict[str, dict[str, Any]] = {}
    for resource in resources:
        by_ref[f"#{resource['id']}"] = resource
        by_ref[f"{resource['resourceType']}/{resource['id']}"] = resource
    for rg in [r for r in resources if r["resourceType"] == "RequestGroup"]:
        for action in _walk(rg.get("action") or []):
            target = by_ref.get(str((action.get("resource") or {}).get("reference")))
            if target is not None and target["resourceType"] != "RequestGroup" and "timingDateTime" in action:
                for key, value in due_elements(target["resourceType"], action).items():
                    target.setdefault(key, value)


def care_plan(result: PlanResult) -> dict[str, Any]:
    """R4 `$apply`: a CarePlan whose one activity is the RequestGroup; everything it made is contained."""
    renderer, rg, goals, outcome = _render(result, contained=True)
    request = result.request
    others = renderer.resources[1:]  # the root RequestGroup is rendered first
    plan: dict[str, Any] = {"resourceType": "CarePlan", "id": rg["id"], "contained": [rg, *goals, *others, *([outcome] if outcome else [])]}
    if outcome:
        plan["extension"] = [{"url": MESSAGES_EXTENSION, "valueReference": {"reference": f"#{outcome['id']}"}}]
    plan.update(_proposed(result.group.plan, request))
    if goals:
        plan["goal"] = [{"reference": f"#{g['id']}"} for g in goals]
    plan["activity"] = [{"reference": {"reference": f"#{rg['id']}"}}]
    return plan


def request_bundle(result: PlanResult) -> dict[str, Any]:
    """CPG / R5 `$apply`: a collection Bundle, the RequestGroup first, then Goals and requests."""
    renderer, rg, goals, outcome = _render(result, contained=False)
    extensions = [{"url": PERTAINS_TO_GOAL_EXTENSION, "valueReference": {"reference": f"Goal/{g['id']}"}} for g in goals]
    if outcome:
        extensions.append({"url": MESSAGES_EXTENSION, "valueReference": {"reference": f"OperationOutcome/{outcome['id']}"}})
    others = renderer.resources[1:]  # the root RequestGroup is rendered first
    if extensions:
        rg = {"resourceType": "RequestGroup", "id": rg["id"], "extension": extensions, **rg}
    entries = [rg, *goals, *others, *([outcome] if outcome else [])]
    return {"resourceType": "Bundle", "id": rg["id"], "type": "collection", "entry": [{"resource": r} for r in entries]}


