"""SMART scopes: the v2 grammar, the v1 forms, and how a scope set limits each permission on each type."""

from __future__ import annotations

import pytest

from app.fhir.outcome import FhirError
from app.security.access import Access, Limit
from app.security.backend import grant_scopes
from app.security.scopes import Scope, parse_scopes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("patient/Observation.rs", [Scope("patient", "Observation", frozenset("rs"))]),
        ("user/ServiceRequest.cruds", [Scope("user", "ServiceRequest", frozenset("cruds"))]),
        ("system/*.rs", [Scope("system", "*", frozenset("rs"))]),
        ("patient/*.read", [Scope("patient", "*", frozenset("rs"))]),
        ("user/*.write", [Scope("user", "*", frozenset("cud"))]),
        ("user/Patient.*", [Scope("user", "Patient", frozenset("cruds"))]),
        ("openid fhirUser launch/patient offline_access", []),
        ("patient/Observation.sr", []),  # letters out of order: not a v2 scope
        ("patient/Observation.rs?category=laboratory", []),  # query restrictions are not honoured, so grant nothing
        ("group/Observation.rs", []),
        ("patient/Observation.", []),
    ],
)
def test_scopes_parse_per_smart_2(text: str, expected: list[Scope]) -> None:
    assert list(parse_scopes(text)) == expected


def test_user_and_system_scopes_reach_every_resource_of_the_type() -> None:
    access = Access(scopes=parse_scopes("user/Observation.rs system/Patient.c"))
    assert access.limit("r", "Observation") is Limit.ANY
    assert access.limit("c", "Patient") is Limit.ANY
    assert access.limit("u", "Observation") is Limit.DENIED
    assert access.limit("r", "Patient") is Limit.DENIED


def test_patient_scopes_reach_the_compartment_and_shared_definitions_only() -> None:
    access = Access(scopes=parse_scopes("patient/*.cruds"), patient="p1")
    assert access.limit("r", "Observation") is Limit.COMPARTMENT
    assert access.limit("c", "Patient") is Limit.COMPARTMENT
    assert access.limit("r", "PlanDefinition") is Limit.ANY  # no patient data in it
    assert access.limit("c", "PlanDefinition") is Limit.DENIED
    assert access.limit("r", "Bundle") is Limit.DENIED  # may hold anyone's data
    assert access.limit("r", "Task") is Limit.DENIED
    assert Access(scopes=parse_scopes("patient/*.rs")).limit("r", "Observation") is Limit.DENIED  # no patient in context


def test_a_user_scope_lifts_the_compartment_limit_of_a_patient_scope() -> None:
    access = Access(scopes=parse_scopes("patient/*.rs user/Observation.rs"), patient="p1")
    assert access.limit("r", "Observation") is Limit.ANY
    assert access.limit("r", "Condition") is Limit.COMPARTMENT


def test_wildcards_never_include_the_audit_trail() -> None:
    assert Access(scopes=parse_scopes("user/*.cruds system/*.rs")).limit("r", "AuditEvent") is Limit.DENIED
    assert Access(scopes=parse_scopes("system/AuditEvent.rs")).limit("s", "AuditEvent") is Limit.ANY


def test_require_says_what_is_missing() -> None:
    with pytest.raises(FhirError) as refused:
        Access(scopes=parse_scopes("user/Patient.r")).require("s", "Patient")
    assert refused.value.status == 403
    assert refused.value.diagnostics == "The access token does not allow to search Patient"


def test_backend_clients_get_at_most_their_registered_system_scopes() -> None:
    allowed = parse_scopes("system/*.rs system/Observation.c")
    assert grant_scopes("system/Patient.read system/Observation.crs system/Observation.c", allowed) == "system/Patient.rs system/Observation.c"
    assert grant_scopes("system/*.rs", allowed) == "system/*.rs"
    assert grant_scopes("system/AuditEvent.rs user/*.rs patient/*.rs", allowed) == ""
