"""The CDS Hooks inputs, read by pure code: prefetch templates and data, hook requests, feedback, the
client allowlist and the JWT checks that need no HTTP."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from app.cds.client_jwt import ClientAuthError, presented_token, trusted_clients, verify_token
from app.cds.discovery import SERVICES, discovery_response, find_service
from app.cds.feedback import parse_feedback
from app.cds.hooks import parse_hook_request
from app.cds.prefetch import PrefetchError, prefetch_resources, render_template
from app.fhir.outcome import FhirError
from tests.cds_support import ISSUER, KID_EC, ClientKeys, hook_request, mr_order, public_jwk, signed_jwt

PATIENT_VIEW = find_service("lbp-pathway")
ORDER_SELECT = find_service("lbp-imaging-order-select")
assert PATIENT_VIEW is not None and ORDER_SELECT is not None


def test_discovery_lists_the_three_hooks_with_their_prefetch() -> None:
    services = discovery_response()["services"]
    assert [(s["hook"], s["id"]) for s in services] == [
        ("patient-view", "lbp-pathway"), ("order-select", "lbp-imaging-order-select"), ("order-sign", "lbp-imaging-order-sign"),
    ]  # fmt: skip
    keys = set(services[0]["prefetch"])
    assert keys == {"patient", "sbst-response", "sbst-scores", "lbp-assessments", "open-service-requests", "open-tasks", "conditions"}
    assert {"patient", "lbp-assessments", "conditions"} == set(services[2]["prefetch"])
    assert all(s.definition()["description"] and s.definition()["title"] for s in SERVICES)


def test_a_template_is_rendered_from_the_context_and_split_into_a_query() -> None:
    query = render_template("Observation?subject=Patient/{{context.patientId}}&code=http://loinc.org|91351-7,x|y&_count=3", {"patientId": "p-1"})
    assert query.path() == "Observation"
    assert query.params == (("subject", "Patient/p-1"), ("code", "http://loinc.org|91351-7,x|y"), ("_count", "3"))
    read = render_template("Patient/{{context.patientId}}", {"patientId": "p-1"})
    assert (read.resource_type, read.resource_id, read.params) == ("Patient", "p-1", ())
    user = render_template("PractitionerRole?_id={{userPractitionerRoleId}}", {"userId": "PractitionerRole/r9"})
    assert user.params == (("_id", "r9"),)


@pytest.mark.parametrize("context", [{}, {"patientId": "1&code=x"}, {"patientId": 7}])
def test_a_token_the_context_cannot_fill_safely_is_refused(context: dict[str, Any]) -> None:
    with pytest.raises(PrefetchError):
        render_template("Condition?patient={{context.patientId}}", context)


def test_prefetch_values_null_resources_bundles_and_outcomes() -> None:
    patient = {"resourceType": "Patient", "id": "1"}
    assert prefetch_resources(None, "k") == []
    assert prefetch_resources(patient, "k") == [patient]
    bundle = {"resourceType": "Bundle", "entry": [{"resource": patient}, {"resource": {"resourceType": "OperationOutcome"}}, {"search": {}}]}
    assert prefetch_resources(bundle, "k") == [patient]
    assert prefetch_resources({"resourceType": "OperationOutcome", "issue": []}, "k") is None
    for bad in ("text", {"no": "type"}, {"resourceType": "Bundle", "entry": {}}):
        with pytest.raises(PrefetchError):
            prefetch_resources(bad, "k")


def test_order_select_considers_the_selected_draft_orders_only() -> None:
    chosen, other = mr_order("p1", order_id="a"), mr_order("p1", order_id="b")
    body = hook_request("order-select", "p1", orders=[chosen, other], context={"selections": ["ServiceRequest/a"]})
    assert ORDER_SELECT is not None
    assert parse_hook_request(body, ORDER_SELECT).orders == (chosen,)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hook": "order-sign"}, "hook"),
        ({"hookInstance": "not-a-uuid"}, "hookInstance"),
        ({"context": {"userId": "Practitioner/1"}}, "context.patientId"),
        ({"context": {"patientId": "1", "userId": "Device/1"}}, "context.userId"),
        ({"fhirAuthorization": {"access_token": "t", "token_type": "Bearer", "expires_in": 300, "scope": "s", "subject": "c"}}, "fhirServer"),
        ({"fhirServer": "http://x", "fhirAuthorization": {"access_token": "t", "token_type": "MAC", "expires_in": 300, "scope": "s", "subject": "c"}}, "fhirAuthorization.token_type"),
        ({"fhirServer": "ftp://x"}, "fhirServer"),
        ({"prefetch": []}, "prefetch"),
        ({"extension": {"dev.backpath.pathway": "../x"}}, "extension.dev.backpath.pathway"),
    ],
)
def test_a_request_breaking_the_spec_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    assert PATIENT_VIEW is not None
    body = {**hook_request("patient-view", "p1"), **change}
    with pytest.raises(FhirError) as raised:
        parse_hook_request(body, PATIENT_VIEW)
    assert raised.value.status == 400 and raised.value.expression == (field,)


def test_feedback_entries_are_read_with_their_reason_and_utc_time() -> None:
    entries = parse_feedback({"feedback": [
        {"card": "c1", "outcome": "accepted", "acceptedSuggestions": [{"id": "s1"}], "outcomeTimestamp": "2021-12-11T10:05:31Z"},
        {"card": "c2", "outcome": "overridden", "overrideReason": {"reason": {"system": "sys", "code": "x", "display": "X"}, "userComment": "no"},
         "outcomeTimestamp": "2021-12-11T11:05:31+01:00"},
    ]})  # fmt: skip
    assert entries[0].accepted_suggestions == ("s1",)
    assert (entries[1].reason_system, entries[1].reason_code, entries[1].user_comment) == ("sys", "x", "no")
    assert entries[1].outcome_timestamp.isoformat() == "2021-12-11T10:05:31"


@pytest.mark.parametrize(
    "entry",
    [
        {"card": "c", "outcome": "ignored", "outcomeTimestamp": "2021-12-11T10:05:31Z"},
        {"card": "c", "outcome": "accepted", "outcomeTimestamp": "2021-12-11T10:05:31Z"},
        {"card": "c", "outcome": "overridden", "overrideReason": {}, "outcomeTimestamp": "2021-12-11T10:05:31Z"},
        {"card": "c", "outcome": "overridden", "outcomeTimestamp": "2021-12-11T10:05:31"},
        {"card": "c", "outcome": "overridden"},
        {"outcome": "overridden", "outcomeTimestamp": "2021-12-11T10:05:31Z"},
    ],
    ids=["outcome", "accepted without suggestions", "empty reason", "no time zone", "no time", "no card"],
)
def test_broken_feedback_is_refused(entry: dict[str, Any]) -> None:
    with pytest.raises(FhirError) as raised:
        parse_feedback({"feedback": [entry]})
    assert raised.value.status == 400


def test_the_allowlist_must_name_usable_public_keys() -> None:
    keys = ClientKeys()
    clients = trusted_clients(json.dumps({ISSUER: {"jwks": keys.jwks()}, "https://other": {"jku": ["https://other/jwks"]}}))
    assert set(clients) == {ISSUER, "https://other"} and len(clients[ISSUER].keys) == 2
    assert trusted_clients("") == {}
    private = {**json.loads(json.dumps(public_jwk(keys.ec, "k", "ES384"))), "d": "AAAA"}
    for broken in ("[]", "{", json.dumps({ISSUER: {}}), json.dumps({ISSUER: {"jwks": {"keys": [private]}}}), json.dumps({ISSUER: {"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}})):
        with pytest.raises(ValueError):
            trusted_clients(broken)


def test_time_claims_are_checked_against_the_given_clock_with_leeway() -> None:
    keys = ClientKeys()
    clients = trusted_clients(json.dumps({ISSUER: {"jwks": keys.jwks()}}))
    now = time.time()
    token = presented_token("Bearer " + signed_jwt(keys.ec, "https://aud"), clients)
    assert verify_token(token, clients[ISSUER].keys, ["https://aud"], now, 30).issuer == ISSUER
    assert verify_token(token, clients[ISSUER].keys, ["https://aud"], now + 320, 30).jti  # expired 20 s ago, within the leeway
    with pytest.raises(ClientAuthError, match="expired"):
        verify_token(token, clients[ISSUER].keys, ["https://aud"], now + 340, 30)
    with pytest.raises(ClientAuthError, match="future"):
        verify_token(token, clients[ISSUER].keys, ["https://aud"], now - 60, 30)
    long_lived = presented_token("Bearer " + signed_jwt(keys.ec, "https://aud", exp=int(now) + 7200), clients)
    with pytest.raises(ClientAuthError, match="more than"):
        verify_token(long_lived, clients[ISSUER].keys, ["https://aud"], now, 30)
    assert KID_EC in {k["kid"] for k in clients[ISSUER].keys}
