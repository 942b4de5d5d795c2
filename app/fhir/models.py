"""FHIR R4 resources as plain JSON, validated with the `fhir.resources` R4B models.

Resources travel through BackPath as plain dicts: validated once on write, then stored and served
as bytes, so reads never pay for model construction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from importlib import resources as package_data
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from app.fhir.outcome import ErrorCategory, FhirError, Issue

__all__ = [
    "MAX_SEQUENCE",
    "MAX_VERSION",
    "RESOURCE_TYPES",
    "SUBSETTED_TAG",
    "has_control_characters",
    "is_valid_id",
    "require_resource_type",
    "stored_number",
    "summary_elements",
    "validate_resource",
]

Resource = dict[str, Any]

RESOURCE_TYPES: frozenset[str] = frozenset(
    json.loads(package_data.files("app.data").joinpath("resource-types.json").read_text())
)

# Logical ids per the R4 `id` datatype.
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# Code points FHIR strings exclude (https://hl7.org/fhir/R4/datatypes.html#string): below 32 except
# tab, CR and LF. The models let them through, and PostgreSQL cannot store NUL in text columns.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")

SUBSETTED_TAG = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "subsetted",
}


def is_valid_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None


# The widths of the stored version column and of the change sequence.
MAX_VERSION = 2**31 - 1
MAX_SEQUENCE = 2**63 - 1


def stored_number(value: str, maximum: int = MAX_VERSION) -> int | None:
    """`value` (ASCII digits) as the number a stored version or sequence could hold; None otherwise,
    so a number no column can hold names nothing rather than overflowing the database."""
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        return None
    number = int(value)
    return number if number <= maximum else None


def has_control_characters(text: str) -> bool:
    """Whether `text` holds a code point that FHIR strings exclude."""
    return _CONTROL.search(text) is not None


def require_resource_type(resource_type: str) -> str:
    """The type itself, or a 404 naming it when the R4B models do not know it."""
    if resource_type not in RESOURCE_TYPES:
        raise FhirError(ErrorCategory.NOT_FOUND, f"Unknown resource type '{resource_type}'")
    return resource_type


def validate_resource(data: Any, expected_type: str | None = None) -> Resource:
    """Check `data` against the R4B model of its type and return it unchanged.

    A body that is not a resource of a known type, or of another type than the URL names, is
    malformed (400); a resource that breaks its model is invalid (422, one issue per problem).
    """
    if not isinstance(data, dict):
        raise FhirError(ErrorCategory.MALFORMED, "The body is not a JSON object")
    resource_type = data.get("resourceType")
    if not isinstance(resource_type, str):
        raise FhirError(ErrorCategory.MALFORMED, "The body has no resourceType", ("resourceType",))
    if resource_type not in RESOURCE_TYPES:
        raise FhirError(ErrorCategory.MALFORMED, f"Unknown resource type '{resource_type}'", ("resourceType",))
    if expected_type is not None and resource_type != expected_type:
        raise FhirError(
            ErrorCategory.MALFORMED,
            f"The resource is a {resource_type} but the URL names {expected_type}",
            ("resourceType",),
        )
    issues = _model_issues(data, resource_type)
    if issues:
        raise FhirError(ErrorCategory.INVALID_RESOURCE, f"{resource_type} is not valid", issues=issues)
    return data


def _model_issues(data: Resource, resource_type: str) -> list[Issue]:
    """What breaks the model of `resource_type` in `data`, with paths from `resource_type`."""
    entries = data.get("entry") if resource_type == "Bundle" else None
    if isinstance(entries, list) and any(isinstance(e, dict) and isinstance(e.get("resource"), dict) for e in entries):
        return _bundle_issues(data, entries)
    return _own_issues(data, resource_type)


def _own_issues(data: Resource, resource_type: str) -> list[Issue]:
    try:
        get_fhir_model_class(resource_type).model_validate(data)
    except ValidationError as error:
        return [_issue(resource_type, problem) for problem in error.errors(include_url=False)]
    except (ValueError, TypeError, RecursionError) as error:  # model-level checks outside pydantic
        return [Issue("error", "invalid", f"{resource_type} is not valid: {error}", (resource_type,))]
    return [
        Issue("error", "invalid", f"{path}: control characters are not allowed in FHIR strings", (path,))
        for path in _control_characters(data, resource_type)
    ]


def _bundle_issues(bundle: Resource, entries: list[Any]) -> list[Issue]:
    """A Bundle checked as its shell and then each entry's resource on its own: the models check
    a nested resource again at every level above it, which made a message's Bundle cost twice the
    sum of its resources. The issues and their paths are the same as one nested check gives."""
    inside = {i: e["resource"] for i, e in enumerate(entries) if isinstance(e, dict) and isinstance(e.get("resource"), dict)}
    shell = {**bundle, "entry": [{k: v for k, v in e.items() if k != "resource"} if i in inside else e for i, e in enumerate(entries)]}
    issues = _own_issues(shell, "Bundle")
    for index, resource in inside.items():
        at = f"Bundle.entry[{index}].resource"
        kind = resource.get("resourceType")
        if not isinstance(kind, str) or kind not in RESOURCE_TYPES:
            issues.append(Issue("error", "invalid", f"{at}: not a resource of a known type", (at,)))
            continue
        issues += [_moved(issue, kind, at) for issue in _model_issues(resource, kind)]
    return issues


def _moved(issue: Issue, old: str, new: str) -> Issue:
    """`issue` of a resource checked on its own, with its paths as seen from the Bundle."""
    def move(text: str) -> str:
        return new + text[len(old) :] if text.startswith(old) else text

    return Issue(issue.severity, issue.code, move(issue.diagnostics), tuple(move(e) for e in issue.expression))


def _control_characters(value: Any, path: str) -> Iterator[str]:
    """Paths of the strings in `value` that hold a code point FHIR strings exclude."""
    if isinstance(value, str):
        if has_control_characters(value):
            yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _control_characters(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _control_characters(item, f"{path}[{index}]")


def _issue(resource_type: str, problem: Any) -> Issue:
    path = resource_type
    for step in problem["loc"]:
        if isinstance(step, int):
            path += f"[{step}]"
        elif step != "resource_type" and not step.startswith(("function-", "__")):
            path += f".{step}"
    message = str(problem["msg"]).split("\n")[0].strip()
    return Issue("error", "invalid" if problem["type"] != "missing" else "required", f"{path}: {message}", (path,))


@cache
def summary_elements(resource_type: str) -> frozenset[str]:
    """Top-level elements marked isSummary (plus mandatory ones) in the model of `resource_type`."""
    model = get_fhir_model_class(resource_type)
    names = set()
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("summary_element_property") or info.is_required():
            names.add(_json_name(info.alias or name))
    return frozenset(names)


@cache
def mandatory_elements(resource_type: str) -> frozenset[str]:
    """Top-level elements with a minimum cardinality of 1."""
    model = get_fhir_model_class(resource_type)
    return frozenset(_json_name(info.alias or name) for name, info in model.model_fields.items() if info.is_required())


def _json_name(alias: str) -> str:
    return alias.removeprefix("_")
