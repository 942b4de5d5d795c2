"""The official FHIR R4 examples (`../shared/conformance/hl7.fhir.r4.examples/`) round-trip through BackPath.

Every example the R4B models accept is PUT at its own id and read back equal to what was sent (apart
from meta.versionId and meta.lastUpdated); the ones the models reject are refused by the server too.
Then the spec's transaction example, `Bundle-bundle-transaction.json`, is posted as a transaction.
The ids in the examples are fixed, so running this again only adds versions.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conformance.conftest import Corpus, Example, Rejected
from tests.factories import FHIR_JSON

# The whole corpus should stay well under a minute; this many requests run concurrently.
_BATCH = 8
# Measured with fhir.resources 8.3 (R4B): 764 of the 779 resource files are accepted. The 15 others
# are R4-only types (MedicinalProduct*, EffectEvidenceSynthesis, RiskEvidenceSynthesis,
# SubstanceSpecification) and two instances invalid under R4B (Evidence-example, Questionnaire-qs1).
_ACCEPTED_AT_LEAST = 764

RecordProperty = Callable[[str, object], None]


def _without_version_meta(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource minus meta.versionId and meta.lastUpdated, which the server sets."""
    result = dict(resource)
    meta = {k: v for k, v in (result.pop("meta", None) or {}).items() if k not in ("versionId", "lastUpdated")}
    if meta:
        result["meta"] = meta
    return result


async def _round_trip(client: httpx.AsyncClient, example: Example) -> str | None:
    """PUT the example as sent, read it back; a description of the first difference, or None."""
    put = await client.put(example.url, content=example.raw, headers=FHIR_JSON)
    if put.status_code not in (200, 201):
        return f"{example.file}: PUT {put.status_code} {put.text[:300]}"
    got = await client.get(example.url)
    if got.status_code != 200 or not got.headers["content-type"].startswith("application/fhir+json"):
        return f"{example.file}: GET {got.status_code} {got.text[:300]}"
    stored = got.json()
    if stored["meta"]["versionId"] != put.json()["meta"]["versionId"]:
        return f"{example.file}: read version {stored['meta']['versionId']} is not the one written"
    if _without_version_meta(stored) != _without_version_meta(example.resource):
        return f"{example.file}: read back differs from what was sent"
    return None


async def _refusal(client: httpx.AsyncClient, rejected: Rejected) -> str | None:
    """PUT an example the models reject: 404 for a type R4B lacks, 422 for an invalid instance."""
    assert rejected.example is not None
    status, codes = (404, {"not-found"}) if rejected.unknown_type else (422, {"invalid", "required"})
    put = await client.put(rejected.example.url, content=rejected.example.raw, headers=FHIR_JSON)
    body = put.json()
    if put.status_code != status or body.get("resourceType") != "OperationOutcome" or body["issue"][0]["code"] not in codes:
        return f"{rejected.file}: PUT {put.status_code} {put.text[:300]}, expected {status}"
    if (await client.get(rejected.example.url)).status_code != 404:
        return f"{rejected.file}: stored although refused"
    return None


async def _in_batches(jobs: list[Any], run: Callable[[Any], Any]) -> list[str]:
    problems: list[str] = []
    for start in range(0, len(jobs), _BATCH):
        results = await asyncio.gather(*(run(job) for job in jobs[start : start + _BATCH]))
        problems.extend(p for p in results if p)
    return problems


async def test_every_example_the_r4b_models_accept_round_trips(
    roomy_client: httpx.AsyncClient, corpus: Corpus, record_property: RecordProperty
) -> None:
    """Each accepted example: PUT answers 200/201 and a read returns exactly what was sent."""
    accepted, rejected = len(corpus.accepted), len(corpus.rejected)
    record_property("r4_examples_accepted", accepted)
    record_property("r4_examples_rejected", rejected)
    record_property("r4_examples_rejected_files", ", ".join(r.file for r in corpus.rejected))

    problems = await _in_batches(corpus.accepted, lambda example: _round_trip(roomy_client, example))

    record_property("r4_examples_round_tripped", accepted - len(problems))
    print(f"\nR4 examples: {accepted} accepted by the R4B models ({accepted - len(problems)} round-tripped), {rejected} rejected")
    assert not problems, "\n".join(problems[:20])
    assert accepted >= _ACCEPTED_AT_LEAST


async def test_examples_the_r4b_models_reject_are_refused_and_not_stored(
    roomy_client: httpx.AsyncClient, corpus: Corpus
) -> None:
    """The server's own validation agrees with the models: 404 for an unknown type, 422 for an invalid one."""
    resources = [r for r in corpus.rejected if r.example is not None]
    assert {r.file for r in corpus.rejected if r.example is None} == {"package.json"}

    problems = await _in_batches(resources, lambda rejected: _refusal(roomy_client, rejected))

    assert not problems, "\n".join(problems)


# --- the transaction example -------------------------------------------------------------------
#
# Bundle-bundle-transaction.json is written against a server already holding some data, and one
# entry cannot succeed on any R4 server:
#   entry[4]  PUT Patient/123a with ifMatch W/"2": 412 unless Patient/123a is at version 2.
#   entry[6]  DELETE Patient?identifier=123456: two examples (Patient/glossy, Patient/pat2) carry that
#             identifier, and with several matches a server may answer 412 (http.html#cdelete;
#             BackPath declares conditionalDelete "single").
#   entry[7]  POST ValueSet/$lookup: R4 defines no such operation ($lookup is CodeSystem/$lookup,
#             OperationDefinition-CodeSystem-lookup.json), so it fails wherever it is sent.
#   entry[9]  GET Patient/12334 (ifNoneMatch W/"4"): 404 unless that Patient exists.
# The tests below establish that state, show that entry[7] fails (and rolls everything back), and
# post the example without it.

_LOOKUP_ENTRY = 7


async def _history_total(client: httpx.AsyncClient) -> int:
    response = await client.get("/_history", params={"_count": "0"})
    assert response.status_code == 200, response.text
    return int(response.json()["total"])


async def _version(client: httpx.AsyncClient, url: str) -> int | None:
    response = await client.get(url)
    return int(response.json()["meta"]["versionId"]) if response.status_code == 200 else None


async def _establish_state(client: httpx.AsyncClient, example: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """Make the store what the example assumes. Returns the version Patient/123a is at and every
    Patient entry[6] could delete (to put back afterwards: other conformance tests search them)."""
    patient_123a = next(e["resource"] for e in example["entry"] if e["request"]["url"] == "Patient/123a")
    # Two PUTs that each change the content (an unchanged PUT makes no version): from an empty store
    # that is version 2, as the example expects, and entry[4] then changes it again.
    for gender in ("unknown", "other"):
        response = await client.put("/Patient/123a", json={**patient_123a, "gender": gender}, headers=FHIR_JSON)
        assert response.status_code in (200, 201), response.text
    version = await _version(client, "/Patient/123a")
    assert version is not None and version >= 2, version
    if await _version(client, "/Patient/12334") is None:
        body = {"resourceType": "Patient", "id": "12334", "name": [{"family": "Chalmers"}]}
        assert (await client.put("/Patient/12334", json=body, headers=FHIR_JSON)).status_code in (200, 201)
    matches = await client.get("/Patient", params={"identifier": "123456"})
    assert matches.status_code == 200, matches.text
    matching = [entry["resource"] for entry in matches.json().get("entry", []) if entry["search"]["mode"] == "match"]
    for resource in matching[1:]:
        assert (await client.delete(f"/Patient/{resource['id']}")).status_code in (200, 204)
    return version, matching


@pytest.fixture(scope="module")
def transaction_example(shared_dir: Path) -> dict[str, Any]:
    example: dict[str, Any] = json.loads(
        (shared_dir / "conformance" / "hl7.fhir.r4.examples" / "Bundle-bundle-transaction.json").read_bytes()
    )
    assert example["type"] == "transaction" and len(example["entry"]) == 10
    assert example["entry"][_LOOKUP_ENTRY]["request"]["url"] == "ValueSet/$lookup"
    return example


@pytest.fixture(scope="module")
async def version_123a(client: httpx.AsyncClient, transaction_example: dict[str, Any]) -> AsyncIterator[int]:
    """The store as the example assumes it (kept by both tests: the first one's failure rolls back);
    afterwards the Patients with identifier 123456 are stored again as they were."""
    version, matching = await _establish_state(client, transaction_example)
    yield version
    for resource in matching:
        response = await client.put(f"/Patient/{resource['id']}", json=resource, headers=FHIR_JSON)
        assert response.status_code in (200, 201), response.text


async def test_transaction_example_as_published_fails_at_valueset_lookup_and_changes_nothing(
    client: httpx.AsyncClient, transaction_example: dict[str, Any], version_123a: int
) -> None:
    """With the assumed data in place the only failing entry is ValueSet/$lookup, and it rolls all back."""
    total = await _history_total(client)

    response = await client.post("/", json=transaction_example, headers=FHIR_JSON)

    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    issue = response.json()["issue"][0]
    assert response.json()["resourceType"] == "OperationOutcome"
    assert issue["expression"] == [f"Bundle.entry[{_LOOKUP_ENTRY}]"]
    assert await _history_total(client) == total
    assert await _version(client, "/Patient/123a") == version_123a


async def test_transaction_example_commits_every_entry(
    client: httpx.AsyncClient, transaction_example: dict[str, Any], version_123a: int, record_property: RecordProperty
) -> None:
    """The example (without ValueSet/$lookup) answers 200 and a 2xx for every entry, in entry order."""
    example = dict(transaction_example)
    entries = [e for i, e in enumerate(transaction_example["entry"]) if i != _LOOKUP_ENTRY]
    # Unchanged (W/"2") unless an earlier run on this database left Patient/123a at a later version.
    entries[4] = {**entries[4], "request": {**entries[4]["request"], "ifMatch": f'W/"{version_123a}"'}}
    example["entry"] = entries

    response = await client.post("/", json=example, headers=FHIR_JSON)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+json")
    result = response.json()
    assert result["resourceType"] == "Bundle" and result["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    record_property("r4_transaction_example_statuses", "; ".join(statuses))
    print(f"\nR4 transaction example: {len(statuses)} entries, statuses {statuses}")
    assert len(statuses) == len(entries)
    assert all(status.startswith("2") for status in statuses), statuses

    created, conditional_create, put_123, conditional_put, put_123a, delete_234, conditional_delete, search, read = result["entry"]
    assert created["response"]["status"] == "201 Created"
    assert conditional_create["response"]["status"] in ("201 Created", "200 OK")
    assert put_123["response"]["location"].startswith("Patient/123/_history/")
    assert conditional_put["response"]["status"] in ("201 Created", "200 OK")
    assert put_123a["response"]["status"] == "200 OK"
    assert put_123a["response"]["etag"] == f'W/"{version_123a + 1}"'
    assert delete_234["response"]["status"] == conditional_delete["response"]["status"] == "204 No Content"
    assert search["resource"]["type"] == "searchset"
    assert read["resource"]["id"] == "12334"

    assert await _version(client, "/Patient/123a") == version_123a + 1
    remaining = await client.get("/Patient", params={"identifier": "123456", "_summary": "count"})
    assert remaining.json()["total"] == 0
    for value in ("234234", "456456"):
        found = await client.get("/Patient", params={"identifier": f"http:/example.org/fhir/ids|{value}", "_summary": "count"})
        assert found.json()["total"] == 1, value
