"""The Patient compartment applied to one token: which patients a resource belongs to, and searches
narrowed to the token patient's compartment (top level, chains and `_has` alike).

Spec: https://hl7.org/fhir/R4/compartmentdefinition-patient.html. Membership is read through the
same search-parameter extractors that fill the reference index, so a read and a search agree on
what belongs to whom. Only local references (`Patient/123`) count: `http://elsewhere/Patient/123`
is another server's patient.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from app.fhir.index import reference_of
from app.fhir.outcome import ErrorCategory, FhirError
from app.fhir.search_params import SearchParameterRegistry, compartment_parameters
from app.fhir.search_query import Criterion, SearchQuery
from app.security.access import Access, Limit

__all__ = ["compartment_criterion", "in_compartment", "patients_of", "resources_in", "restrict_search", "visible"]

_MEMBERS = compartment_parameters()


def patients_of(registry: SearchParameterRegistry, resource: dict[str, Any]) -> frozenset[str]:
    """Ids of the patients whose compartment holds `resource` (a Patient holds itself)."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return frozenset()
    found = set()
    if resource_type == "Patient" and isinstance(resource.get("id"), str):
        found.add(resource["id"])
    for code in _MEMBERS.get(resource_type, ()):
        definition = registry.get(resource_type, code)
        if definition is None:
            continue
        for value in definition.extract(resource):
            reference = reference_of(value)
            if reference is not None and reference[0] == "Patient" and reference[1]:
                found.add(reference[1])
    return frozenset(found)


def in_compartment(registry: SearchParameterRegistry, resource: dict[str, Any], patient: str) -> bool:
    return patient in patients_of(registry, resource)


def visible(registry: SearchParameterRegistry, access: Access, resource: dict[str, Any], permission: str = "r") -> bool:
    """Whether `access` may see `resource` (its type allowed, and in the compartment where that is the limit)."""
    limit = access.limit(permission, resource.get("resourceType", ""))
    if limit is Limit.COMPARTMENT:
        return access.patient is not None and in_compartment(registry, resource, access.patient)
    if limit is Limit.INSTANCE:
        return access.names(resource.get("resourceType", ""), resource.get("id"))
    return limit is Limit.ANY


def resources_in(resource: Any) -> Iterator[dict[str, Any]]:
    """`resource` and every resource inside it: Bundle entries, Parameters values, contained ones."""
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return
    yield resource
    for contained in resource.get("contained") or []:
        yield from resources_in(contained)
    if resource["resourceType"] == "Bundle":
        for entry in resource.get("entry") or []:
            if isinstance(entry, dict):
                yield from resources_in(entry.get("resource"))
    elif resource["resourceType"] == "Parameters":
        yield from _parameter_resources(resource.get("parameter"))


def _parameter_resources(parameters: Any) -> Iterator[dict[str, Any]]:
    for parameter in parameters or []:
        if isinstance(parameter, dict):
            yield from resources_in(parameter.get("resource"))
            yield from _parameter_resources(parameter.get("part"))


def compartment_criterion(resource_type: str, patient: str) -> Criterion:
    """A criterion matching the resources of `resource_type` in `patient`'s compartment."""
    references = tuple(Criterion("reference", code, None, (("Patient", patient, None),)) for code in _MEMBERS.get(resource_type, ()))
    if resource_type == "Patient":
        references = (Criterion("id", "_id", None, (patient,)), *references)
    return Criterion("or", "_compartment", None, references)


def restrict_search(query: SearchQuery, access: Access, permission: str = "s") -> SearchQuery:
    """`query` limited to what `access` may reach: 403 without `permission` on its type (search, or
    the conditional interaction's own); the compartment criterion added to the query and inside
    every chain and `_has` that reaches a type limited to it; chain targets the token may not
    search dropped (403 when none is left)."""
    limit = access.require(permission, query.resource_type)
    if access.unrestricted:
        return query
    criteria = tuple(_restrict(criterion, access) for criterion in query.criteria)
    if limit is Limit.COMPARTMENT:
        assert access.patient is not None  # a compartment limit needs a patient in context
        criteria = (compartment_criterion(query.resource_type, access.patient), *criteria)
    return replace(query, criteria=criteria)


def _restrict(criterion: Criterion, access: Access) -> Criterion:
    if criterion.kind == "chain":
        kept = [
            (target, inner)
            for target, inner in zip(criterion.target_types, criterion.values, strict=True)
            if access.limit("s", target) is not Limit.DENIED
        ]
        if not kept:
            targets = ", ".join(criterion.target_types)
            raise FhirError(ErrorCategory.FORBIDDEN, f"The access token does not allow to search {targets} (chained through '{criterion.param}')")
        return replace(
            criterion,
            target_types=tuple(t for t, _ in kept),
            values=tuple(_within(inner, target, access) for target, inner in kept),
        )
    if criterion.kind == "has":
        assert criterion.source_type is not None
        access.require("s", criterion.source_type)
        return replace(criterion, values=(_within(criterion.values[0], criterion.source_type, access),))
    return criterion


def _within(inner: Criterion, resource_type: str, access: Access) -> Criterion:
    """An inner criterion on `resource_type`, also held to the compartment where that is the limit."""
    inner = _restrict(inner, access)
    if access.limit("s", resource_type) is Limit.COMPARTMENT and access.patient is not None:
        return Criterion("and", "_compartment", None, (compartment_criterion(resource_type, access.patient), inner))
    return inner
