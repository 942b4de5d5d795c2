"""Search parameters from the official definitions: per-type expressions and token extraction."""

from __future__ import annotations

import pytest

from app.fhir.index import index_resource
from app.fhir.models import RESOURCE_TYPES
from app.fhir.outcome import FhirError
from app.fhir.search_params import SearchParameterRegistry, official_search_parameters
from app.fhir.search_query import TokenValue, parse_search


@pytest.fixture(scope="module")
def registry() -> SearchParameterRegistry:
    return SearchParameterRegistry(official_search_parameters(), RESOURCE_TYPES)


def test_shared_expressions_are_split_per_type(registry: SearchParameterRegistry) -> None:
    assert registry.for_type("Observation")["code"].expression == "Observation.code"
    assert registry.for_type("Patient")["identifier"].expression == "Patient.identifier"
    assert registry.for_type("Patient")["_id"].expression == "Patient.id"


def test_our_own_search_parameter_definition_is_picked_up() -> None:
    own = {
        "resourceType": "SearchParameter",
        "url": "http://backpath.dev/fhir/SearchParameter/patient-gender-identity",
        "code": "marital",
        "base": ["Patient"],
        "type": "token",
        "expression": "Patient.maritalStatus",
    }
    registry = SearchParameterRegistry([*official_search_parameters(), own], RESOURCE_TYPES)
    patient = {"resourceType": "Patient", "maritalStatus": {"coding": [{"system": "urn:ms", "code": "M"}]}}
    assert ("marital", "urn:ms", "M", None) in index_resource(registry, patient).tokens


def test_token_entries_cover_codings_identifiers_codes_and_choice_types(registry: SearchParameterRegistry) -> None:
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "91351-7"}]},
        "identifier": [{"system": "urn:id", "value": "42"}],
        "valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": "LA9193-9"}]},
    }
    entries = [row[:3] for row in index_resource(registry, observation).tokens]
    assert ("code", "http://loinc.org", "91351-7") in entries
    assert ("identifier", "urn:id", "42") in entries
    assert ("status", None, "final") in entries
    assert ("value-concept", "http://loinc.org", "LA9193-9") in entries


def test_token_values_parse_all_four_forms(registry: SearchParameterRegistry) -> None:
    query = parse_search(
        "Observation",
        [("code", "a|b,|c,d,e|")],
        registry,
        default_count=10,
        max_count=100,
    )
    assert query.criteria[0].values == (
        TokenValue("a", "b"),
        TokenValue(None, "c", no_system=True),
        TokenValue(None, "d"),
        TokenValue("e", None),
    )


def test_count_is_capped_and_bad_values_are_rejected(registry: SearchParameterRegistry) -> None:
    assert parse_search("Patient", [("_count", "5000")], registry, default_count=10, max_count=100).count == 100
    with pytest.raises(FhirError):
        parse_search("Patient", [("_count", "-1")], registry, default_count=10, max_count=100)
    with pytest.raises(FhirError):
        parse_search("Patient", [("nonsense", "x")], registry, default_count=10, max_count=100, strict=True)
