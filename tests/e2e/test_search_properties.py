"""Generated searches against a real server: no 5xx; a 200 is a searchset Bundle, a 4xx an
OperationOutcome; a rejected search leaves the store as it was."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.factories import FHIR_JSON, observation, patient

_TYPES = ["Patient", "Observation", "Encounter", "Practitioner"]
_PARAMS = ["name", "family", "code", "subject", "patient", "date", "value-quantity", "identifier", "_id", "_lastUpdated", "_tag",
           "birthdate", "performer", "status", "combo-code-value-quantity", "general-practitioner", "encounter"]  # fmt: skip
_SPECIAL = ["_sort", "_count", "_include", "_revinclude", "_summary", "_elements", "_total", "_cursor", "_format"]
_VALUES = ["", "Jansen", "Patient/x", "http://loinc.org|91351-7", "|x", "gt2024-01-01", "ap2024", "le5||mg", "5.0e2", "a,b",
           "Observation:subject", "Observation:subject:Patient", "Patient:general-practitioner", "-date,_id", "count", "true",
           "9999-99-99", "abc\\,def", "none", "e30", "json"]  # fmt: skip

_name = st.one_of(
    st.builds(lambda p, m: p + m, st.sampled_from(_PARAMS), st.sampled_from(["", ":exact", ":contains", ":missing", ":not", ":text", ":Patient", ":above", ":x"])),
    st.builds(lambda p, t, q: f"{p}:{t}.{q}", st.sampled_from(["subject", "patient", "performer"]), st.sampled_from(_TYPES), st.sampled_from(_PARAMS)),
    st.builds(lambda t, p, q: f"_has:{t}:{p}:{q}", st.sampled_from(_TYPES), st.sampled_from(["subject", "patient", "performer"]), st.sampled_from(_PARAMS)),
    st.sampled_from(_SPECIAL),
    st.text(max_size=10),
)
_value = st.one_of(st.sampled_from(_VALUES), st.text(max_size=16))


@pytest.fixture(scope="module")
def http(live_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server, headers=FHIR_JSON, timeout=30) as client:
        anna = client.post("/Patient", json=patient("Jansen")).json()["id"]
        client.post("/Observation", json=observation(f"Patient/{anna}"))
        yield client


def _store_size(http: httpx.Client) -> int:
    return int(http.get("/_history", params={"_count": "0"}).json()["total"])


@seed(20261201)
@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(_TYPES), st.lists(st.tuples(_name, _value), max_size=4), st.booleans(), st.booleans())
def test_generated_searches_never_fail_the_server(
    http: httpx.Client, resource_type: str, params: list[tuple[str, str]], strict: bool, by_post: bool
) -> None:
    before = _store_size(http)
    headers = {"Prefer": "handling=strict"} if strict else {}
    if by_post:
        form = httpx.QueryParams(params)
        response = http.post(
            f"/{resource_type}/_search", content=str(form), headers={**headers, "Content-Type": "application/x-www-form-urlencoded"}
        )
    else:
        response = http.get(f"/{resource_type}", params=params, headers=headers)
    assert response.status_code < 500, response.text
    if response.status_code == 406:  # a generated _format asked for something other than JSON
        return
    body = response.json()
    if response.status_code == 200:
        assert body["resourceType"] == "Bundle" and body["type"] == "searchset"
    else:
        assert body["resourceType"] == "OperationOutcome"
        assert _store_size(http) == before
