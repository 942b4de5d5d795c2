"""Resource validation and the resource-type list the server answers for."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources as package_data
from typing import Any

import pytest
from fhir.resources.R4B import fhirtypes, get_fhir_model_class
from fhir.resources.R4B.resource import Resource

from app.fhir.models import RESOURCE_TYPES, validate_resource
from app.fhir.outcome import ErrorCategory, FhirError


def _models() -> Iterator[Any]:
    """Every model class the R4B package names in its fhirtypes."""
    for name in dir(fhirtypes):
        if not name.endswith("Type"):
            continue
        try:
            yield get_fhir_model_class(name.removesuffix("Type"))
        except ValueError:
            continue


def test_resource_type_list_is_exactly_what_the_r4b_models_know() -> None:
    known = set()
    for model in _models():
        if issubclass(model, Resource) and model.__name__ not in ("Resource", "DomainResource"):
            known.add(model.__name__)
    vendored = set(json.loads(package_data.files("app.data").joinpath("resource-types.json").read_text()))
    assert vendored == known == RESOURCE_TYPES


def test_invalid_resource_gives_one_issue_per_problem_with_its_location() -> None:
    with pytest.raises(FhirError) as caught:
        validate_resource({"resourceType": "Patient", "birthDate": "soon", "active": "maybe", "bogus": 1}, "Patient")
    assert caught.value.category is ErrorCategory.INVALID_RESOURCE
    assert sorted(issue.expression[0] for issue in caught.value.issues) == ["Patient.active", "Patient.birthDate", "Patient.bogus"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ([], ErrorCategory.MALFORMED),
        ({"name": "x"}, ErrorCategory.MALFORMED),
        ({"resourceType": "Nonsense"}, ErrorCategory.MALFORMED),
        ({"resourceType": "Observation", "status": "final", "code": {"text": "x"}}, ErrorCategory.MALFORMED),
    ],
)
def test_bodies_that_are_not_the_expected_resource_are_malformed(body: object, expected: ErrorCategory) -> None:
    with pytest.raises(FhirError) as caught:
        validate_resource(body, "Patient")
    assert caught.value.category is expected


def test_choice_element_list_is_exactly_what_the_r4b_models_know() -> None:
    choices: dict[str, set[str]] = {}
    for model in _models():
        for field_name, info in getattr(model, "model_fields", {}).items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            base = extra.get("one_of_many")
            key = info.alias or field_name
            if isinstance(base, str) and key.startswith(base):
                choices.setdefault(base, set()).add(key[len(base) :])
    vendored = json.loads(package_data.files("app.data").joinpath("choice-elements.json").read_text())
    assert {k: set(v) for k, v in vendored.items()} == choices


def test_a_bundle_is_checked_entry_by_entry_with_paths_from_the_bundle() -> None:
    nested = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Patient", "active": "maybe"}}]}
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "total": "many",
        "entry": [
            {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "birthDate": "soon"}},
            {"resource": {"resourceType": "Observation"}},
            {"resource": {"resourceType": "Nonsense"}},
            {"resource": nested},
            {"resource": {"resourceType": "Practitioner", "active": True}},
            {"resource": {"resourceType": "Patient", "name": [{"family": "bad\x01name"}]}},
        ],
    }
    with pytest.raises(FhirError) as caught:
        validate_resource(bundle, "Bundle")
    assert caught.value.category is ErrorCategory.INVALID_RESOURCE
    assert sorted(issue.expression[0] for issue in caught.value.issues) == [
        "Bundle.entry[0].resource.birthDate",
        "Bundle.entry[1].resource.code",
        "Bundle.entry[2].resource",
        "Bundle.entry[3].resource.entry[0].resource.active",
        "Bundle.entry[5].resource.name[0].family",
        "Bundle.total",
    ]
    assert all(issue.diagnostics.startswith(issue.expression[0]) for issue in caught.value.issues)
    valid = {"resourceType": "Bundle", "type": "collection", "entry": [bundle["entry"][4], {"resource": {**nested, "entry": []}}]}
    assert validate_resource(valid, "Bundle") is valid
