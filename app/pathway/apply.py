"""PlanDefinition/$apply as a pipeline of pure steps over a frozen request.

Spec: https://hl7.org/fhir/R4/plandefinition.html#12.18.3.3 ("Applying a PlanDefinition"), the R4
operation https://hl7.org/fhir/R4/plandefinition-operation-apply.html and the CPG `$apply`
(https://hl7.org/fhir/uv/cpg/OperationDefinition-cpg-plandefinition-apply.html).

Steps, per action: variables → applicability conditions → copied elements → child actions →
definition (ActivityDefinition through its $apply, nested PlanDefinition recursively, Questionnaire
referenced, definitionUri passed through) → the action's dynamic values (after the definition's, so
they win) → concrete timing. The whole result is computed before anything is rendered
(`app.pathway.render` assigns the ids and references, as a CarePlan or a Bundle).

BackPath rules on top of the spec, documented in plandefinitions/README.md:
- a condition that evaluates to empty is *undecided*: the action is left out and the result names
  the unknown facts that would decide it;
- under `cqf-applicabilityBehavior` = `any` the children are tried in order and the first that
  applies wins; an undecided child stops the search too (a later alternative is only right when the
  earlier ones are known not to apply);
- a group (child actions or a nested plan) that ends up with no actions is itself left out;
- when the plan is applied for an event (a CDS Hooks hook), an action whose `named-event`
  triggers do not name it does not apply; without an event (`$apply`) triggers are not evaluated,
  as in clinical-reasoning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

import orjson

from app.fhir.outcome import Issue
from app.pathway.activity import Who, add_to, apply_activity_definition, apply_dynamic_values, model_problems
from app.pathway.expressions import Environment
from app.pathway.timing import TIMING_KEYS, concrete_timing, due_elements
from app.pathway.translation import localized

__all__ = [
    "APPLICABILITY_EXTENSION",
    "ActionDraft",
    "ApplyInput",
    "Artifacts",
    "GroupDraft",
    "PlanResult",
    "Proposal",
    "apply_activity",
    "apply_plan_definition",
    "referenced_definitions",
    "safe_id",
]

APPLICABILITY_EXTENSION = "http://hl7.org/fhir/StructureDefinition/cqf-applicabilityBehavior"

# Elements of a PlanDefinition action copied onto the RequestGroup action (R4 "Applying", plus id).
_COPIED = (
    "id", "title", "description", "textEquivalent", "priority", "code", "documentation", "type",
    "groupingBehavior", "selectionBehavior", "requiredBehavior", "precheckBehavior", "cardinalityBehavior",
    "relatedAction",
)  # fmt: skip
_UNSAFE_ID = re.compile(r"[^A-Za-z0-9\-.]+")


@dataclass(frozen=True)
class Artifacts:
    """Knowledge artifacts (PlanDefinition, ActivityDefinition, Questionnaire) by canonical URL."""

    resources: tuple[Mapping[str, Any], ...] = ()
    by_url: Mapping[str, tuple[Mapping[str, Any], ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, list[Mapping[str, Any]]] = {}
        for resource in self.resources:
            index.setdefault(str(resource.get("url")), []).append(resource)
        object.__setattr__(self, "by_url", {url: tuple(found) for url, found in index.items()})

    def find(self, canonical: str, holder: Mapping[str, Any] | None = None) -> Mapping[str, Any] | None:
        """`#id` in the holder's contained resources, else `url` or `url|version` (latest version)."""
        if canonical.startswith("#"):
            return next((r for r in (holder or {}).get("contained") or [] if r.get("id") == canonical[1:]), None)
        url, _, version = canonical.partition("|")
        matches = [r for r in self.by_url.get(url, ()) if not version or r.get("version") == version]
        return max(matches, key=lambda r: _version_key(str(r.get("version") or "")), default=None)


@dataclass(frozen=True)
class ApplyInput:
    """Everything one `$apply` reads, fixed before the first step runs."""

    subject: str
    today: date
    now: datetime
    artifacts: Artifacts = field(default_factory=Artifacts)
    resources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # "Type/id" → resource
    named_inputs: Mapping[str, Any] = field(default_factory=dict)  # facts and `parameters`
    context_parameters: Mapping[str, Any] = field(default_factory=dict)  # userType, setting, ...
    encounter: str | None = None
    practitioner: str | None = None
    organization: str | None = None
    language: str | None = None
    anchor: date | None = None  # what timing offsets count from; None: today
    event: str | None = None  # the named event (CDS Hooks hook) the plan is applied for, if any

    def environment(self) -> Environment:
        """`%subject`, `%patient`, `%encounter`, `%practitioner`, `%organization` as resolved
        resources, the context parameters by name, and the named inputs."""
        subject: Any = self.resources.get(self.subject) or []
        inputs: dict[str, Any] = {**self.named_inputs}
        inputs.update(
            subject=subject,
            patient=subject if self.subject.startswith("Patient/") else [],
            encounter=self._resolved(self.encounter),
            practitioner=self._resolved(self.practitioner),
            organization=self._resolved(self.organization),
        )
        inputs.update({name: self.context_parameters.get(name) or [] for name in CONTEXT_PARAMETERS})
        return Environment(inputs, self.today, self.now)

    def who(self) -> Who:
        return Who(self.subject, self.encounter, self.practitioner)

    def timing_anchor(self) -> date:
        return self.anchor or self.today

    def _resolved(self, reference: str | None) -> Any:
        return self.resources.get(reference, []) if reference else []


CONTEXT_PARAMETERS = ("userType", "userLanguage", "userTaskContext", "setting", "settingContext")


@dataclass(frozen=True)
class Proposal:
    """A generated request before it has an id."""

    resource: Mapping[str, Any]
    key: str


@dataclass(frozen=True)
class ActionDraft:
    """A RequestGroup action before rendering: its own elements, children and what it points to."""

    element: Mapping[str, Any]
    children: tuple[ActionDraft, ...] = ()
    target: Proposal | GroupDraft | str | None = None


@dataclass(frozen=True)
class GroupDraft:
    """A RequestGroup before rendering: the plan it instantiates and its actions."""

    plan: Mapping[str, Any]
    actions: tuple[ActionDraft, ...]
    key: str
    goals: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class _Outcome:
    """What one action (or list of actions) came to: drafts, or nothing decided / undecided."""

    actions: tuple[ActionDraft, ...] = ()
    decided: bool = True
    unknown: frozenset[str] = frozenset()
    issues: tuple[Issue, ...] = ()


@dataclass(frozen=True)
class PlanResult:
    """The computed result of a PlanDefinition/$apply, ready to render either way."""

    group: GroupDraft
    request: ApplyInput
    issues: tuple[Issue, ...]
    unknown: frozenset[str]


def apply_plan_definition(plan: Mapping[str, Any], request: ApplyInput) -> PlanResult:
    """Apply `plan` for `request.subject`; content problems become issues, never exceptions."""
    env = request.environment()
    group, outcome = _apply_plan(plan, env, request, str(plan.get("id") or "plan"), ())
    return PlanResult(group, request, outcome.issues, outcome.unknown)


def apply_activity(definition: Mapping[str, Any], request: ApplyInput) -> tuple[dict[str, Any] | None, list[Issue]]:
    """ActivityDefinition/$apply for `request.subject`: the resource, or None and the problems."""
    definition = localized(definition, request.language)
    resource, problems = apply_activity_definition(definition, request.environment(), request.who(), request.timing_anchor())
    issues = [Issue("error", "processing", f"ActivityDefinition {_name(definition)}: {p}") for p in problems]
    if resource is not None:
        resource["id"] = safe_id(str(definition.get("id") or "activity"))
    return resource, issues


def referenced_definitions(resource: Mapping[str, Any]) -> set[str]:
    """The canonicals the actions of a PlanDefinition (and its contained ones) point to, `#` excluded."""
    found: set[str] = set()

    def walk(actions: Sequence[Mapping[str, Any]]) -> None:
        for action in actions:
            canonical = action.get("definitionCanonical")
            if isinstance(canonical, str) and not canonical.startswith("#"):
                found.add(canonical)
            walk(action.get("action") or [])

    walk(resource.get("action") or [])
    for contained in resource.get("contained") or []:
        walk(contained.get("action") or [])
    return found


# --- the steps -------------------------------------------------------------------------------


def _apply_plan(
    plan: Mapping[str, Any], env: Environment, request: ApplyInput, key: str, trail: tuple[str, ...]
) -> tuple[GroupDraft, _Outcome]:
    plan = localized(plan, request.language)
    url = str(plan.get("url") or plan.get("id") or "")
    if url in trail:
        issue = Issue("error", "processing", f"PlanDefinition {url} includes itself ({' → '.join((*trail, url))}); not applied again")
        return GroupDraft(plan, (), key), _Outcome(decided=False, issues=(issue,))
    env, problems = env.bind(context=plan).with_variables(plan, plan)
    issues = [Issue("warning", "processing", f"PlanDefinition {_name(plan)}: {p}") for p in problems]
    outcome = _actions(plan.get("action") or [], _behavior(plan), env, plan, request, "PlanDefinition", (*trail, url))
    goals = tuple(_goal(g, request) for g in plan.get("goal") or [])
    return GroupDraft(plan, outcome.actions, key, goals), replace(outcome, issues=(*issues, *outcome.issues))


def _actions(
    definitions: Sequence[Mapping[str, Any]],
    behavior: str,
    env: Environment,
    plan: Mapping[str, Any],
    request: ApplyInput,
    path: str,
    trail: tuple[str, ...],
) -> _Outcome:
    drafts: list[ActionDraft] = []
    issues: list[Issue] = []
    unknown: set[str] = set()
    decided = True
    for index, definition in enumerate(definitions):
        outcome = _action(definition, env, plan, request, f"{path}.action[{index}]", trail)
        issues.extend(outcome.issues)
        drafts.extend(outcome.actions)
        unknown |= outcome.unknown
        if not outcome.decided:
            decided = False
        if behavior == "any" and (outcome.actions or not outcome.decided):
            break
    return _Outcome(tuple(drafts), decided or bool(drafts), frozenset(unknown), tuple(issues))


def _action(
    definition: Mapping[str, Any], env: Environment, plan: Mapping[str, Any], request: ApplyInput, path: str, trail: tuple[str, ...]
) -> _Outcome:
    if not _triggered_by(definition, request.event):
        return _Outcome()
    label = f"{_name(plan)} action '{definition.get('id') or definition.get('title') or path}'"
    env, problems = env.with_variables(definition, plan)
    issues = [Issue("warning", "processing", f"{label}: {p}", (path,)) for p in problems]
    applicable, unknown, condition_issues = _applicability(definition, env, plan, label, path)
    issues.extend(condition_issues)
    if applicable is not True:
        return _Outcome(decided=applicable is False, unknown=unknown, issues=tuple(issues))

    element: dict[str, Any] = {name: definition[name] for name in _COPIED if name in definition}
    if definition.get("dynamicValue"):  # dynamic values write into it: never into the definition
        element = orjson.loads(orjson.dumps(element))
    conditions = [c for c in definition.get("condition") or [] if c.get("kind") in ("start", "stop")]
    if conditions:
        element["condition"] = conditions
    children = _Outcome()
    if definition.get("action"):
        children = _actions(definition["action"], _behavior(definition), env, plan, request, path, trail)
        issues.extend(children.issues)

    target: Proposal | GroupDraft | str | None = None
    unknown = children.unknown
    canonical = definition.get("definitionCanonical")
    if isinstance(canonical, str):
        resolved = _definition(canonical, definition, env, plan, request, label, path, trail)
        issues.extend(resolved.issues)
        unknown |= resolved.unknown
        if resolved.failed:
            return _Outcome(decided=False, unknown=resolved.unknown, issues=tuple(issues))
        target = resolved.target
        if isinstance(target, GroupDraft) and not target.actions:
            target = None  # the nested plan had nothing to propose
            if not children.actions:
                return _Outcome(decided=resolved.decided, unknown=resolved.unknown, issues=tuple(issues))
    elif isinstance(definition.get("definitionUri"), str):
        target = definition["definitionUri"]

    if definition.get("action") and not children.actions and target is None:
        return _Outcome(decided=children.decided, unknown=children.unknown, issues=tuple(issues))

    anchor = request.timing_anchor()
    element.update(concrete_timing(definition, anchor))
    if isinstance(target, Proposal) and any(k in element for k in TIMING_KEYS):
        resource = dict(target.resource)
        resource.update(due_elements(str(resource["resourceType"]), element))
        target = Proposal(resource, target.key)
    action_env = env.bind(context=plan)
    problems = apply_dynamic_values(element, definition, action_env, plan, prefix="action.")
    if not isinstance(target, Proposal):  # nothing generated: every dynamic value is about the action
        problems += apply_dynamic_values(element, definition, action_env, plan)
    if problems:
        issues.extend(Issue("error", "processing", f"{label}: {p}; the action is left out", (path,)) for p in problems)
        return _Outcome(decided=False, issues=tuple(issues))
    return _Outcome((ActionDraft(element, children.actions, target),), unknown=unknown, issues=tuple(issues))


def _applicability(
    definition: Mapping[str, Any], env: Environment, plan: Mapping[str, Any], label: str, path: str
) -> tuple[bool | None, frozenset[str], list[Issue]]:
    """All applicability conditions must hold; one false decides, otherwise one undecided leaves
    the action undecided (and says which facts were unknown)."""
    verdict: bool | None = True
    unknown: set[str] = set()
    issues: list[Issue] = []
    for index, condition in enumerate(definition.get("condition") or []):
        if condition.get("kind") != "applicability":
            continue
        expression = condition.get("expression") or {}
        where = f"{path}.condition[{index}]"
        if expression.get("language", "text/fhirpath") != "text/fhirpath":
            issues.append(Issue("warning", "not-supported", f"{label}: only text/fhirpath conditions are evaluated", (where,)))
            verdict = None if verdict is not False else False
            continue
        decision = env.condition(str(expression.get("expression") or ""), plan)
        if decision.applies is False:
            return False, frozenset(), issues
        if decision.applies is None:
            verdict = None
            unknown |= decision.unknown
            if decision.problem:
                issues.append(Issue("error", "processing", f"{label}: {decision.problem}; the action is left out", (where,)))
    if verdict is None and unknown:
        facts = ", ".join(sorted(unknown))
        issues.append(Issue("information", "incomplete", f"{label} did not apply: unknown {facts} (answering would decide it)", (path,)))
    return verdict, frozenset(unknown), issues


@dataclass(frozen=True)
class _Resolved:
    target: Proposal | GroupDraft | str | None = None
    failed: bool = False
    decided: bool = True
    unknown: frozenset[str] = frozenset()
    issues: tuple[Issue, ...] = ()


def _definition(
    canonical: str,
    action: Mapping[str, Any],
    env: Environment,
    plan: Mapping[str, Any],
    request: ApplyInput,
    label: str,
    path: str,
    trail: tuple[str, ...],
) -> _Resolved:
    where = (f"{path}.definitionCanonical",)
    artifact = request.artifacts.find(canonical, plan)
    if artifact is None:
        return _Resolved(failed=True, decided=False, issues=(Issue("error", "not-found", f"{label}: {canonical} is not known; the action is left out", where),))
    kind = artifact.get("resourceType")
    key = str(action.get("id") or artifact.get("id") or "action")  # made unique when rendered
    if kind == "ActivityDefinition":
        resource, problems = apply_activity_definition(
            localized(artifact, request.language), env, request.who(), request.timing_anchor(), "option", check=False
        )
        if resource is not None:
            problems += apply_dynamic_values(resource, action, env.bind(context=plan), plan)
            add_to(resource, "reasonCode", list(action.get("reason") or []))  # why the rule proposes it
            problems = problems or model_problems(resource, request.who())
        if resource is None or problems:
            issues = tuple(Issue("error", "processing", f"{label}: {p}; the action is left out", where) for p in problems)
            return _Resolved(failed=True, decided=False, issues=issues)
        return _Resolved(Proposal(resource, key))
    if kind == "PlanDefinition":
        group, outcome = _apply_plan(artifact, request.environment(), request, key, trail)
        return _Resolved(group, decided=outcome.decided, unknown=outcome.unknown, issues=outcome.issues)
    if kind == "Questionnaire":
        return _Resolved(f"#{artifact['id']}" if canonical.startswith("#") else f"Questionnaire/{artifact.get('id')}")
    return _Resolved(failed=True, decided=False, issues=(Issue("error", "not-supported", f"{label}: a {kind} cannot be a definition; the action is left out", where),))


def _goal(goal: Mapping[str, Any], request: ApplyInput) -> dict[str, Any]:
    """A proposed Goal from PlanDefinition.goal; a target `due` Duration becomes a due date."""
    result: dict[str, Any] = {"resourceType": "Goal", "lifecycleStatus": "proposed"}
    if "category" in goal:
        result["category"] = [goal["category"]]
    for name in ("description", "priority"):
        if name in goal:
            result[name] = goal[name]
    result["subject"] = {"reference": request.subject}
    if "start" in goal:
        result["startCodeableConcept"] = goal["start"]
    targets = []
    for target in goal.get("target") or []:
        converted = {k: v for k, v in target.items() if k != "due"}
        if "due" in target:
            due = concrete_timing({"timingDuration": target["due"]}, request.timing_anchor())
            if "timingDateTime" in due:
                converted["dueDate"] = due["timingDateTime"][:10]
        targets.append(converted)
    if targets:
        result["target"] = targets
    return result


def _triggered_by(action: Mapping[str, Any], event: str | None) -> bool:
    """Whether an action applies for `event`: always without an event or without named-event
    triggers, otherwise only when one of them names it."""
    if event is None:
        return True
    names = [t.get("name") for t in action.get("trigger") or [] if t.get("type") == "named-event"]
    return not names or event in names


def _behavior(holder: Mapping[str, Any]) -> str:
    for extension in holder.get("extension") or []:
        if extension.get("url") == APPLICABILITY_EXTENSION and extension.get("valueCode") in ("any", "all"):
            return str(extension["valueCode"])
    return "all"


def _name(resource: Mapping[str, Any]) -> str:
    return str(resource.get("id") or resource.get("url") or resource.get("resourceType") or "definition")


def safe_id(key: str) -> str:
    """A valid resource id made from a readable key."""
    return _UNSAFE_ID.sub("-", key).strip("-")[:64] or "id"


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(part)) if part.isascii() and part.isdigit() and len(part) < 19 else (1, part) for part in re.split(r"[.\-]", version))
