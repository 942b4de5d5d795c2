"""The Patient compartment per token: membership of a resource, and searches narrowed to it."""

from __future__ import annotations

import pytest

from app.fhir.models import RESOURCE_TYPES
from app.fhir.outcome import FhirError
from app.fhir.search_params import SearchParameterRegistry, official_search_parameters
from app.fhir.search_query import Criterion, parse_search
from app.security.access import Access
from app.security.compartment import compartment_criterion, patients_of, restrict_search
from app.security.scopes import parse_scopes


@pytest.fixture(scope="module")
def registry() -> SearchParameterRegistry:
    return SearchParameterRegistry(official_search_parameters(), RESOURCE_TYPES)


def test_a_resource_belongs_to_the_patients_it_references_through_compartment_parameters(registry: SearchParameterRegistry) -> None:
    observation = {
        "resourceType": "Observation",
        "subject": {"reference": "Patient/a"},
        "performer": [{"reference": "Patient/b"}, {"reference": "Practitioner/x"}],
        "hasMember": [{"reference": "Observation/o"}],
    }
    assert patients_of(registry, observation) == {"a", "b"}
    assert patients_of(registry, {"resourceType": "Patient", "id": "a"}) == {"a"}
    assert patients_of(registry, {"resourceType": "Observation", "subject": {"reference": "https://elsewhere/fhir/Patient/a"}}) == set()
    assert patients_of(registry, {"resourceType": "Practitioner", "id": "x"}) == set()


def test_a_patient_limited_search_gets_the_compartment_criterion_also_inside_chains_and_has(registry: SearchParameterRegistry) -> None:
    access = Access(scopes=parse_scopes("patient/*.rs"), patient="a")
    params = [("performer:Patient.name", "x"), ("_has:Observation:subject:code", "c")]
    query = parse_search("Observation", params, registry, default_count=10, max_count=10)
    restricted = restrict_search(query, access)
    scope, chain, has = restricted.criteria
    assert scope == compartment_criterion("Observation", "a")
    assert chain.values[0] == Criterion("and", "_compartment", None, (compartment_criterion("Patient", "a"), query.criteria[0].values[0]))
    assert has.values[0].kind == "and"
    assert compartment_criterion("Patient", "a").values[0] == Criterion("id", "_id", None, ("a",))


def test_a_chain_into_types_the_token_may_not_search_is_refused(registry: SearchParameterRegistry) -> None:
    query = parse_search("Observation", [("subject:Patient.name", "x")], registry, default_count=10, max_count=10)
    with pytest.raises(FhirError) as refused:
        restrict_search(query, Access(scopes=parse_scopes("user/Observation.rs")))
    assert refused.value.status == 403
