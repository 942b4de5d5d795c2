"""ActivityDefinition/$apply: the request resource an ActivityDefinition describes, for one subject.

Spec: https://hl7.org/fhir/R4/activitydefinition-operation-apply.html and "Applying an
ActivityDefinition" (https://hl7.org/fhir/R4/activitydefinition.html#12.17.3.3): a resource of type
`kind` is built from the definition's elements, then each `dynamicValue` is evaluated in order and
set at its path (`%context` is the ActivityDefinition, `%resource` the resource being built).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import cache, lru_cache
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class

from app.fhir.fhirpath import FhirPathError
from app.fhir.models import validate_resource
from app.fhir.outcome import FhirError
from app.pathway.expressions import Environment, to_json_value
from app.pathway.paths import PathError, set_path
from app.pathway.timing import concrete_timing, due_elements

__all__ = ["TARGET_STATUS_EXTENSION", "Who", "activity_request", "add_to", "apply_activity_definition", "apply_dynamic_values", "model_problems"]

# US eCR's extension for the status the generated resource should have (used by clinical-reasoning).
TARGET_STATUS_EXTENSION = "http://hl7.org/fhir/us/ecr/StructureDefinition/targetStatus"



@dataclass(frozen=True)
class Who:
    """Whom the request is for and who asks: references as `Type/id`."""

    subject: str
    encounter: str | None = None
    practitioner: str | None = None


def apply_activity_definition(
    definition: Mapping[str, Any], env: Environment, who: Who, anchor: date, intent: str | None = None, *, check: bool = True
) -> tuple[dict[str, Any] | None, list[str]]:
    """The resource `definition` describes, with its dynamic values applied, and the problems met.

    Returns None for the resource when it cannot be built (no or unknown `kind`, failing expression,
    or — with `check` — a result that breaks its R4 model; a caller that adds more checks itself).
    """
    kind = definition.get("kind")
    if not isinstance(kind, str) or not _elements(kind):
        return None, [f"ActivityDefinition {definition.get('url') or definition.get('id')} has no usable kind ({kind!r})"]
    resource = activity_request(definition, who, anchor, intent=intent)
    env, problems = env.bind(context=definition).with_variables(definition, definition)
    problems += apply_dynamic_values(resource, definition, env, definition)
    if check and not problems:
        problems = model_problems(resource, who)
    return (None if problems else resource), problems


def activity_request(definition: Mapping[str, Any], who: Who, anchor: date, *, intent: str | None = None) -> dict[str, Any]:
    """The definition's elements mapped onto a new resource of its `kind` (no dynamic values yet)."""
    kind = str(definition["kind"])
    elements = _elements(kind)
    resource: dict[str, Any] = {"resourceType": kind, "status": _target_status(definition) or "draft"}
    if "intent" in elements:
        resource["intent"] = intent or definition.get("intent") or "proposal"
    _copy(definition, resource, elements, ("priority", "doNotPerform", "description", "bodySite"))
    if "code" in definition:
        if "code" in elements:
            resource["code"] = definition["code"]
        elif "category" in elements:  # CommunicationRequest has no code: what it is goes in category
            resource["category"] = [definition["code"]]
    subject_element = next((e for e in ("subject", "for", "patient") if e in elements), None)
    if subject_element:
        resource[subject_element] = {"reference": who.subject}
    if who.encounter and "encounter" in elements:
        resource["encounter"] = {"reference": who.encounter}
    if who.practitioner and "requester" in elements:
        resource["requester"] = {"reference": who.practitioner}
    _participants(definition, resource, elements, who)
    if definition.get("url") and "instantiatesCanonical" in elements:
        add_to(resource, "instantiatesCanonical", [definition["url"]])
    if definition.get("location") and "locationReference" in elements:
        resource["locationReference"] = [definition["location"]]
    if "quantity" in definition and "quantityQuantity" in elements:
        resource["quantityQuantity"] = definition["quantity"]
    for key in ("productCodeableConcept", "productReference"):
        target = key.replace("product", "medication")
        if key in definition and target in elements:
            resource[target] = definition[key]
    if "dosage" in definition and "dosageInstruction" in elements:
        resource["dosageInstruction"] = definition["dosage"]
    resource.update(due_elements(kind, concrete_timing(definition, anchor)))
    copied: dict[str, Any] = orjson.loads(orjson.dumps(resource))  # its own: dynamic values write into it
    return copied


def apply_dynamic_values(
    target: dict[str, Any], holder: Mapping[str, Any], env: Environment, focus: Mapping[str, Any], prefix: str = ""
) -> list[str]:
    """Evaluate `holder.dynamicValue` in order and write each result into `target`.

    With a `prefix` (e.g. "action."), only the paths starting with it are applied, without it;
    without one, paths starting with "action." are skipped. Returns the problems met.
    """
    problems: list[str] = []
    for dynamic in holder.get("dynamicValue") or []:
        path = str(dynamic.get("path") or "")
        if prefix and not path.startswith(prefix):
            continue
        if not prefix and path.startswith("action."):
            continue
        expression = dynamic.get("expression") or {}
        if expression.get("language", "text/fhirpath") != "text/fhirpath":
            problems.append(f"dynamicValue '{path}': only text/fhirpath expressions are supported")
            continue
        try:
            values = env.evaluate(str(expression.get("expression") or ""), focus, target)
            set_path(target, path.removeprefix(prefix), [to_json_value(v) for v in values], target.get("resourceType"))
        except (FhirPathError, PathError) as error:
            problems.append(f"dynamicValue '{path}': {error}")
    return problems


def _participants(definition: Mapping[str, Any], resource: dict[str, Any], elements: frozenset[str], who: Who) -> None:
    """AD.participant: a role becomes the performer type; the patient as participant is the one
    the request is addressed to (Task.owner, CommunicationRequest.recipient)."""
    for participant in definition.get("participant") or []:
        role = participant.get("role")
        if role and "performerType" in elements and "performerType" not in resource:
            add_to(resource, "performerType", [role])
        if participant.get("type") == "patient":
            if "owner" in elements:
                resource["owner"] = {"reference": who.subject}
            elif "recipient" in elements:
                resource["recipient"] = [{"reference": who.subject}]


def model_problems(resource: Mapping[str, Any], who: Who) -> list[str]:
    """What makes a generated resource break its R4 model (a content problem, e.g. a wrong path).

    Model validation is the costliest step of `$apply`, and a rule generates the same resource for
    every patient but for the references to them: those (checked when the call was parsed) are
    replaced by placeholders and the verdict is remembered for that content.
    """
    shape = orjson.dumps(resource, option=orjson.OPT_SORT_KEYS).decode()
    for reference, placeholder in ((who.subject, "Patient/s"), (who.encounter, "Encounter/e"), (who.practitioner, "Practitioner/p")):
        if reference:
            shape = shape.replace(f'"{reference}"', f'"{placeholder}"')
    return list(_problems_of(shape))


@lru_cache(maxsize=4096)
def _problems_of(shape: str) -> tuple[str, ...]:
    resource = orjson.loads(shape)
    try:
        validate_resource(resource)
    except FhirError as error:
        return tuple(f"the generated {resource.get('resourceType')} is not valid: {issue.diagnostics}" for issue in error.issues)
    return ()


def add_to(resource: dict[str, Any], element: str, values: list[Any]) -> None:
    """Add `values` to a top-level element, as a list or a single value as its R4 cardinality says
    (Task.reasonCode is 0..1, ServiceRequest.reasonCode 0..*); a single-valued one keeps what it has."""
    if not values or element not in _elements(resource["resourceType"]):
        return
    if element in _lists(resource["resourceType"]):
        current = resource.get(element)
        resource[element] = [*(current if isinstance(current, list) else [current] if current else []), *values]
    elif element not in resource:
        resource[element] = values[0]


def _target_status(definition: Mapping[str, Any]) -> str | None:
    for extension in definition.get("extension") or []:
        if extension.get("url") == TARGET_STATUS_EXTENSION:
            value = extension.get("valueString") or extension.get("valueCode")
            return value if isinstance(value, str) else None
    return None


def _copy(source: Mapping[str, Any], target: dict[str, Any], elements: frozenset[str], names: tuple[str, ...]) -> None:
    for name in names:
        if name in source and name in elements:
            target[name] = source[name]


@cache
def _lists(resource_type: str) -> frozenset[str]:
    """The top-level elements of a type that repeat (0..*)."""
    model = get_fhir_model_class(resource_type)
    return frozenset(info.alias or name for name, info in model.model_fields.items() if "List[" in str(info.annotation))


@cache
def _elements(resource_type: str) -> frozenset[str]:
    """The JSON element names of a resource type in the R4B models (empty for an unknown type)."""
    try:
        model = get_fhir_model_class(resource_type)
    except ValueError:
        return frozenset()
    return frozenset(info.alias or name for name, info in model.model_fields.items())
