"""The inputs of `$apply`, read from a Parameters body and/or the query string and checked.

Spec: https://hl7.org/fhir/R4/plandefinition-operation-apply.html (subject, encounter, practitioner,
organization, userType, userLanguage, userTaskContext, setting, settingContext) and the CPG
additions (https://hl7.org/fhir/uv/cpg/OperationDefinition-cpg-plandefinition-apply.html: url,
version, data, parameters, useServerData). Anything else is refused (400), so a misspelt
parameter never silently changes a clinical result.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.fhir.models import validate_resource
from app.fhir.outcome import ErrorCategory, FhirError, Issue
from app.pathway.apply import CONTEXT_PARAMETERS
from app.pathway.facts import INPUT_NAMES

__all__ = ["ApplyParameters", "data_resources", "lenient_check", "parse_apply_parameters"]

_SUBJECT_TYPES = frozenset({"Patient", "Practitioner", "Organization", "Location", "Device", "Group"})
_REFERENCE = re.compile(r"(?:.*/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})")
_REFERENCES = ("subject", "encounter", "practitioner", "organization")
_IGNORED_QUERY = frozenset({"_format", "_pretty"})
# Names the engine defines itself: a `parameters` entry may not hide them.
RESERVED = frozenset({*INPUT_NAMES, *CONTEXT_PARAMETERS, *_REFERENCES, "patient", "context", "resource"})


@dataclass(frozen=True)
class ApplyParameters:
    subjects: tuple[str, ...]
    definition: dict[str, Any] | None = None  # the planDefinition / activityDefinition resource
    url: str | None = None
    version: str | None = None
    encounter: str | None = None
    practitioner: str | None = None
    organization: str | None = None
    context: Mapping[str, dict[str, Any]] = field(default_factory=dict)  # userType, ... as CodeableConcepts
    data: tuple[dict[str, Any], ...] = ()
    parameters: Mapping[str, Any] = field(default_factory=dict)
    use_server_data: bool = True
    warnings: tuple[Issue, ...] = ()
    event: str | None = None  # the CDS Hooks hook applying the plan (never set by $apply)


def parse_apply_parameters(body: Any, query: Sequence[tuple[str, str]], definition_name: str) -> ApplyParameters:
    """Read and check the inputs; `definition_name` is `planDefinition` or `activityDefinition`."""
    values: dict[str, list[Any]] = {}
    for name, value in query:
        if name not in _IGNORED_QUERY:
            values.setdefault(name, []).append(("query", value))
    if body is not None:
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise FhirError(ErrorCategory.MALFORMED, "The body of $apply must be a Parameters resource")
        for parameter in body.get("parameter") or []:
            if not isinstance(parameter, dict) or not isinstance(parameter.get("name"), str):
                raise FhirError(ErrorCategory.MALFORMED, "Every parameter needs a name")
            values.setdefault(parameter["name"], []).append(("body", parameter))
    known = {*_REFERENCES, *CONTEXT_PARAMETERS, "url", "version", "data", "parameters", "useServerData", definition_name}
    unknown = sorted(set(values) - known)
    if unknown:
        raise FhirError(ErrorCategory.INVALID_PARAMETER, f"$apply does not take {', '.join(unknown)}", tuple(unknown))

    warnings: list[Issue] = []
    subjects = tuple(_reference(v, "subject", _SUBJECT_TYPES) for v in values.get("subject", []))
    if not subjects:
        raise FhirError(ErrorCategory.INVALID_PARAMETER, "$apply needs a subject (e.g. Patient/123)", ("subject",))
    definition = _single_resource(values, definition_name, warnings)
    data = _single_resource(values, "data", warnings, "Bundle")
    parameters = _single_resource(values, "parameters", warnings, "Parameters")
    return ApplyParameters(
        subjects=subjects,
        definition=definition,
        url=_single_text(values, "url"),
        version=_single_text(values, "version"),
        encounter=_single_reference(values, "encounter", frozenset({"Encounter"})),
        practitioner=_single_reference(values, "practitioner", frozenset({"Practitioner", "PractitionerRole"})),
        organization=_single_reference(values, "organization", frozenset({"Organization"})),
        context={name: _concept(_single(values, name), name) for name in CONTEXT_PARAMETERS if name in values},
        data=data_resources(data) if data else (),
        parameters=_named(parameters) if parameters else {},
        use_server_data=_boolean(_single(values, "useServerData"), "useServerData") if "useServerData" in values else True,
        warnings=tuple(warnings),
    )


def data_resources(bundle: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    """The resources of a `data` Bundle, with references to other entries' fullUrls (urn:uuid:…)
    rewritten to `Type/id` so the engine can follow them."""
    entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    aliases = {
        str(e["fullUrl"]): f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in entries
        if e.get("fullUrl") and e["resource"].get("id")
    }
    return tuple(_rewrite(e["resource"], aliases) for e in entries)


def _rewrite(value: Any, aliases: Mapping[str, str]) -> Any:
    if isinstance(value, list):
        return [_rewrite(v, aliases) for v in value]
    if isinstance(value, dict):
        return {k: (aliases.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite(v, aliases)) for k, v in value.items()}
    return value


def _single(values: Mapping[str, list[Any]], name: str) -> Any:
    found = values.get(name, [])
    if len(found) > 1:
        raise FhirError(ErrorCategory.INVALID_PARAMETER, f"'{name}' may be given only once", (name,))
    return found[0] if found else None


def _text(value: Any, name: str) -> str:
    source, content = value
    if source == "query":
        return str(content)
    for key in ("valueString", "valueUri", "valueCanonical", "valueUrl", "valueId", "valueCode"):
        if isinstance(content.get(key), str):
            return str(content[key])
    reference = (content.get("valueReference") or {}).get("reference")
    if isinstance(reference, str):
        return reference
    raise FhirError(ErrorCategory.INVALID_PARAMETER, f"'{name}' needs a string or Reference value", (name,))


def _single_text(values: Mapping[str, list[Any]], name: str) -> str | None:
    value = _single(values, name)
    return None if value is None else _text(value, name)


def _reference(value: Any, name: str, types: frozenset[str]) -> str:
    text = _text(value, name)
    match = _REFERENCE.fullmatch(text)
    if match is None or match.group(1) not in types:
        allowed = " or ".join(sorted(types))
        raise FhirError(ErrorCategory.INVALID_PARAMETER, f"'{name}' must be a reference to a {allowed} (Type/id), not '{text}'", (name,))
    return f"{match.group(1)}/{match.group(2)}"


def _single_reference(values: Mapping[str, list[Any]], name: str, types: frozenset[str]) -> str | None:
    value = _single(values, name)
    return None if value is None else _reference(value, name, types)


def _concept(value: Any, name: str) -> dict[str, Any]:
    """A CodeableConcept parameter; in a query as `system|code` or `code`."""
    source, content = value
    if source == "query":
        system, bar, code = str(content).partition("|")
        return {"coding": [{"system": system, "code": code} if bar else {"code": system}]}
    if isinstance(content.get("valueCodeableConcept"), dict):
        return dict(content["valueCodeableConcept"])
    if isinstance(content.get("valueCoding"), dict):
        return {"coding": [content["valueCoding"]]}
    if isinstance(content.get("valueCode"), str):
        return {"coding": [{"code": content["valueCode"]}]}
    if isinstance(content.get("valueString"), str):
        return {"text": content["valueString"]}
    raise FhirError(ErrorCategory.INVALID_PARAMETER, f"'{name}' needs a CodeableConcept value", (name,))


def _boolean(value: Any, name: str) -> bool:
    source, content = value
    raw = content if source == "query" else content.get("valueBoolean")
    if raw in (True, "true"):
        return True
    if raw in (False, "false"):
        return False
    raise FhirError(ErrorCategory.INVALID_PARAMETER, f"'{name}' must be true or false", (name,))


def _single_resource(values: Mapping[str, list[Any]], name: str, warnings: list[Issue], expected: str | None = None) -> dict[str, Any] | None:
    value = _single(values, name)
    if value is None:
        return None
    source, content = value
    resource = content.get("resource") if source == "body" else None
    if not isinstance(resource, dict):
        raise FhirError(ErrorCategory.INVALID_PARAMETER, f"'{name}' must be a resource in a Parameters body", (name,))
    expected = expected or name[0].upper() + name[1:]
    if resource.get("resourceType") != expected:
        raise FhirError(ErrorCategory.INVALID_PARAMETER, f"'{name}' must be a {expected}", (name,))
    warnings.extend(lenient_check(resource, name))
    return resource


def lenient_check(resource: dict[str, Any], name: str) -> list[Issue]:
    """Model-check a supplied resource: missing mandatory elements only warn (it is applied, not
    stored); any other problem refuses the call with 422."""
    try:
        validate_resource(resource)
    except FhirError as error:
        if all(issue.code == "required" for issue in error.issues):
            return [Issue("warning", "required", f"'{name}': {issue.diagnostics}", issue.expression) for issue in error.issues]
        raise
    return []


def _named(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """`parameters` bound by name for the expressions (`%name`); a repeated name is a list."""
    named: dict[str, list[Any]] = {}
    for parameter in parameters.get("parameter") or []:
        name = parameter.get("name")
        if name in RESERVED:
            raise FhirError(ErrorCategory.INVALID_PARAMETER, f"'parameters' may not redefine the built-in input %{name}", ("parameters",))
        named.setdefault(name, []).append(_value(parameter))
    return {name: values[0] if len(values) == 1 else values for name, values in named.items()}


def _value(parameter: Mapping[str, Any]) -> Any:
    if "resource" in parameter:
        return parameter["resource"]
    if "part" in parameter:
        return {part.get("name"): _value(part) for part in parameter["part"] or []}
    for key, value in parameter.items():
        if key.startswith("value"):
            return value
    return []
