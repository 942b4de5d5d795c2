"""SMART scopes against every interaction, and a token for one patient against every way to reach
another patient's data: reads, search parameters, `_include`/`_revinclude`, chains, `_has`,
transactions, history and operations (a `$apply`-shaped operation with a `subject` parameter).

Two patients, Anna (the token's patient) and Bram, share a practitioner; Anna's Observation names
Bram as performer, and Bram has Observations of his own.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.services import resources
from app.services.context import FhirContext
from app.services.operations import Operation, OperationCall, OperationResult
from tests.factories import observation, patient, sbst_response, unique
from tests.tokens import Issuer

ADMIN = "user/*.cruds"


@dataclass(frozen=True)
class World:
    anna: str
    bram: str
    anna_family: str
    bram_family: str
    bram_identifier: str
    practitioner: str
    anna_observation: str  # subject Anna, performer Bram and the practitioner
    bram_observation: str  # subject Bram, performer the practitioner
    anna_code: str
    bram_code: str


async def _create(client: httpx.AsyncClient, issuer: Issuer, resource: dict[str, Any]) -> str:
    response = await client.post(f"/{resource['resourceType']}", json=resource, headers=issuer.headers(ADMIN))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture(scope="module")
async def world(secure_client: httpx.AsyncClient, issuer: Issuer) -> World:
    anna_family, bram_family = unique("Anna"), unique("Bram")
    bram_identifier = unique("bsn")
    anna = await _create(secure_client, issuer, patient(anna_family))
    bram = await _create(
        secure_client, issuer, patient(bram_family, identifier=[{"system": "urn:backpath:test", "value": bram_identifier}])
    )
    practitioner = await _create(secure_client, issuer, {"resourceType": "Practitioner", "name": [{"family": unique("Dokter")}]})
    anna_code, bram_code = unique("code"), unique("code")
    anna_observation = await _create(
        secure_client,
        issuer,
        observation(f"Patient/{anna}", code=anna_code, performer=[{"reference": f"Patient/{bram}"}, {"reference": f"Practitioner/{practitioner}"}]),
    )
    bram_observation = await _create(
        secure_client, issuer, observation(f"Patient/{bram}", code=bram_code, performer=[{"reference": f"Practitioner/{practitioner}"}])
    )
    return World(anna, bram, anna_family, bram_family, bram_identifier, practitioner, anna_observation, bram_observation, anna_code, bram_code)


def _ids(bundle: dict[str, Any], mode: str | None = None) -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e.get("resource", {}).get("resourceType") != "OperationOutcome" and (mode is None or e["search"]["mode"] == mode)
    }


def _forbidden(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["issue"][0]["code"] == "forbidden"
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]


# ---------------------------------------------------------------- the matrix: each interaction against its scope

Request = Callable[[httpx.AsyncClient, dict[str, str], World], Awaitable[httpx.Response]]


def _patch_body() -> bytes:
    return json.dumps([{"op": "replace", "path": "/birthDate", "value": "1971-01-01"}]).encode()


async def _fresh(client: httpx.AsyncClient, issuer: Issuer) -> str:
    return await _create(client, issuer, patient(unique("Matrix")))


MATRIX: dict[str, tuple[str, str, Callable[[Issuer], Request], int]] = {
    # name: (granting scope, a scope that does not grant it, request, success status)
}


def _case(name: str, allowed: str, refused: str, status: int) -> Callable[[Callable[[Issuer], Request]], Callable[[Issuer], Request]]:
    def register(build: Callable[[Issuer], Request]) -> Callable[[Issuer], Request]:
        MATRIX[name] = (allowed, refused, build, status)
        return build

    return register


@_case("read", "user/Patient.r", "user/Patient.s", 200)
def _read(issuer: Issuer) -> Request:
    return lambda c, h, w: c.get(f"/Patient/{w.anna}", headers=h)


@_case("vread", "user/Patient.r", "user/Observation.r", 200)
def _vread(issuer: Issuer) -> Request:
    return lambda c, h, w: c.get(f"/Patient/{w.anna}/_history/1", headers=h)


@_case("search-type", "user/Patient.s", "user/Patient.r", 200)
def _search(issuer: Issuer) -> Request:
    return lambda c, h, w: c.get("/Patient", params={"_id": w.anna}, headers=h)


@_case("search-post", "user/Patient.s", "user/Patient.r", 200)
def _search_post(issuer: Issuer) -> Request:
    return lambda c, h, w: c.post(
        "/Patient/_search", content=f"_id={w.anna}", headers={**h, "Content-Type": "application/x-www-form-urlencoded"}
    )


@_case("compartment-search", "user/Observation.s", "user/Patient.s", 200)
def _compartment(issuer: Issuer) -> Request:
    return lambda c, h, w: c.get(f"/Patient/{w.anna}/Observation", headers=h)


@_case("history-instance", "user/Patient.r", "user/Patient.s", 200)
def _history_instance(issuer: Issuer) -> Request:
    return lambda c, h, w: c.get(f"/Patient/{w.anna}/_history", headers=h)


@_case("history-type", "user/Patient.s", "user/Patient.r", 200)
def _history_type(issuer: Issuer) -> Request:
    return lambda c, h, w: c.get("/Patient/_history", params={"_count": "1"}, headers=h)


@_case("create", "user/Patient.c", "user/Patient.rus", 201)
def _create_case(issuer: Issuer) -> Request:
    return lambda c, h, w: c.post("/Patient", json=patient(), headers=h)


@_case("conditional-create", "user/Patient.c", "user/Patient.rus", 201)
def _conditional_create(issuer: Issuer) -> Request:
    return lambda c, h, w: c.post("/Patient", json=patient(), headers={**h, "If-None-Exist": f"identifier={unique('none')}"})


@_case("update", "user/Patient.u", "user/Patient.crs", 200)
def _update(issuer: Issuer) -> Request:
    async def run(c: httpx.AsyncClient, h: dict[str, str], w: World) -> httpx.Response:
        target = await _fresh(c, issuer)
        return await c.put(f"/Patient/{target}", json={**patient(), "id": target}, headers=h)

    return run


@_case("conditional-update", "user/Patient.u", "user/Patient.crs", 201)
def _conditional_update(issuer: Issuer) -> Request:
    return lambda c, h, w: c.put(f"/Patient?identifier={unique('cond')}", json=patient(), headers=h)


@_case("patch", "user/Patient.u", "user/Patient.crs", 200)
def _patch(issuer: Issuer) -> Request:
    async def run(c: httpx.AsyncClient, h: dict[str, str], w: World) -> httpx.Response:
        target = await _fresh(c, issuer)
        return await c.patch(f"/Patient/{target}", content=_patch_body(), headers={**h, "Content-Type": "application/json-patch+json"})

    return run


@_case("delete", "user/Patient.d", "user/Patient.crus", 204)
def _delete(issuer: Issuer) -> Request:
    async def run(c: httpx.AsyncClient, h: dict[str, str], w: World) -> httpx.Response:
        return await c.delete(f"/Patient/{await _fresh(c, issuer)}", headers=h)

    return run


@_case("conditional-delete", "user/Patient.d", "user/Patient.crus", 204)
def _conditional_delete(issuer: Issuer) -> Request:
    return lambda c, h, w: c.delete(f"/Patient?identifier={unique('gone')}", headers=h)


@_case("transaction", "user/Patient.c user/Observation.c", "user/Patient.c", 200)
def _transaction(issuer: Issuer) -> Request:
    def body() -> dict[str, Any]:
        return {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"fullUrl": "urn:uuid:1d0c0f3e-1111-4a4a-9b9b-000000000001", "resource": patient(), "request": {"method": "POST", "url": "Patient"}},
                {
                    "resource": observation("urn:uuid:1d0c0f3e-1111-4a4a-9b9b-000000000001"),
                    "request": {"method": "POST", "url": "Observation"},
                },
            ],
        }

    return lambda c, h, w: c.post("/", json=body(), headers=h)


@_case("operation", "user/Patient.r", "user/Patient.s", 200)
def _operation(issuer: Issuer) -> Request:
    return lambda c, h, w: c.post("/Patient/$validate", json=patient(), headers=h)


@_case("instance-operation", "user/Patient.r", "user/Observation.r", 200)
def _instance_operation(issuer: Issuer) -> Request:
    return lambda c, h, w: c.get(f"/Patient/{w.anna}/$validate", params={"mode": "delete"}, headers=h)


@pytest.mark.parametrize("name", sorted(MATRIX))
async def test_each_interaction_needs_its_scope(secure_client: httpx.AsyncClient, issuer: Issuer, world: World, name: str) -> None:
    allowed, refused, build, status = MATRIX[name]
    request = build(issuer)
    granted = await request(secure_client, issuer.headers(allowed), world)
    assert granted.status_code == status, granted.text
    _forbidden(await request(secure_client, issuer.headers(refused), world))


async def test_a_refused_transaction_writes_nothing(secure_client: httpx.AsyncClient, issuer: Issuer) -> None:
    family = unique("Half")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": "urn:uuid:2d0c0f3e-1111-4a4a-9b9b-000000000002", "resource": patient(family), "request": {"method": "POST", "url": "Patient"}},
            {"resource": observation("urn:uuid:2d0c0f3e-1111-4a4a-9b9b-000000000002"), "request": {"method": "POST", "url": "Observation"}},
        ],
    }
    response = await secure_client.post("/", json=bundle, headers=issuer.headers("user/Patient.c"))
    _forbidden(response)
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[1]"]
    found = await secure_client.get("/Patient", params={"family": family}, headers=issuer.headers(ADMIN))
    assert found.json()["total"] == 0


async def test_a_batch_refuses_entry_by_entry(secure_client: httpx.AsyncClient, issuer: Issuer, world: World) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Patient/{world.anna}"}},
            {"request": {"method": "GET", "url": f"Observation/{world.anna_observation}"}},
        ],
    }
    response = await secure_client.post("/", json=bundle, headers=issuer.headers("user/Patient.r"))
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["200 OK", "403 Forbidden"]


async def test_wildcards_do_not_reach_the_audit_trail(secure_client: httpx.AsyncClient, issuer: Issuer) -> None:
    _forbidden(await secure_client.get("/AuditEvent", headers=issuer.headers("user/*.cruds")))
    _forbidden(await secure_client.get("/AuditEvent", headers=issuer.headers("system/*.rs")))
    assert (await secure_client.get("/AuditEvent", params={"_count": "1"}, headers=issuer.headers("user/AuditEvent.rs"))).status_code == 200


async def test_system_history_shows_only_the_types_the_scopes_name(secure_client: httpx.AsyncClient, issuer: Issuer, world: World) -> None:
    history = (await secure_client.get("/_history", params={"_count": "50"}, headers=issuer.headers("user/Observation.rs"))).json()
    assert history["entry"]
    assert {e["resource"]["resourceType"] for e in history["entry"] if "resource" in e} == {"Observation"}
    assert "total" not in history  # a filtered history has no honest total


# ---------------------------------------------------------------- a token for one patient


@pytest.fixture
def anna_reads(issuer: Issuer, world: World) -> dict[str, str]:
    return issuer.headers("patient/*.rs", patient=world.anna)


@pytest.fixture
def anna_writes(issuer: Issuer, world: World) -> dict[str, str]:
    return issuer.headers("patient/*.cruds", patient=world.anna)


async def test_reads_stay_in_the_patients_compartment(secure_client: httpx.AsyncClient, world: World, anna_reads: dict[str, str]) -> None:
    assert (await secure_client.get(f"/Patient/{world.anna}", headers=anna_reads)).status_code == 200
    assert (await secure_client.get(f"/Observation/{world.anna_observation}", headers=anna_reads)).status_code == 200
    _forbidden(await secure_client.get(f"/Patient/{world.bram}", headers=anna_reads))
    _forbidden(await secure_client.get(f"/Observation/{world.bram_observation}", headers=anna_reads))
    _forbidden(await secure_client.get(f"/Observation/{world.bram_observation}/_history/1", headers=anna_reads))
    # types without patient data are readable; types that may carry anyone's data are not
    assert (await secure_client.get(f"/Practitioner/{world.practitioner}", headers=anna_reads)).status_code == 200
    _forbidden(await secure_client.get("/Bundle", headers=anna_reads))


async def test_a_patient_scope_without_a_patient_in_context_grants_nothing(secure_client: httpx.AsyncClient, issuer: Issuer, world: World) -> None:
    _forbidden(await secure_client.get(f"/Patient/{world.anna}", headers=issuer.headers("patient/*.rs")))


async def test_searches_see_only_the_patients_compartment(secure_client: httpx.AsyncClient, world: World, anna_reads: dict[str, str]) -> None:
    everything = (await secure_client.get("/Observation", params={"code": f"{world.anna_code},{world.bram_code}"}, headers=anna_reads)).json()
    assert _ids(everything) == {f"Observation/{world.anna_observation}"}
    assert everything["total"] == 1
    by_subject = (await secure_client.get("/Observation", params={"subject": f"Patient/{world.bram}"}, headers=anna_reads)).json()
    assert _ids(by_subject) == set()
    patients = (await secure_client.get("/Patient", params={"family": world.bram_family}, headers=anna_reads)).json()
    assert patients["total"] == 0
    by_identifier = (await secure_client.get("/Patient", params={"identifier": world.bram_identifier}, headers=anna_reads)).json()
    assert by_identifier["total"] == 0
    compartment = (await secure_client.get(f"/Patient/{world.bram}/Observation", headers=anna_reads)).json()
    assert _ids(compartment) <= {f"Observation/{world.anna_observation}"}  # only what is Anna's too


async def test_includes_leave_out_other_patients(
    secure_client: httpx.AsyncClient, issuer: Issuer, world: World, anna_reads: dict[str, str]
) -> None:
    params = {"_id": world.anna_observation, "_include": "Observation:performer"}
    admin = (await secure_client.get("/Observation", params=params, headers=issuer.headers(ADMIN))).json()
    assert f"Patient/{world.bram}" in _ids(admin, "include")
    anna = (await secure_client.get("/Observation", params=params, headers=anna_reads)).json()
    assert _ids(anna, "include") == {f"Practitioner/{world.practitioner}"}
    rev = {"_id": world.practitioner, "_revinclude": "Observation:performer"}
    admin_rev = (await secure_client.get("/Practitioner", params=rev, headers=issuer.headers(ADMIN))).json()
    assert f"Observation/{world.bram_observation}" in _ids(admin_rev, "include")
    anna_rev = (await secure_client.get("/Practitioner", params=rev, headers=anna_reads)).json()
    assert _ids(anna_rev, "include") == {f"Observation/{world.anna_observation}"}
    only_observations = issuer.headers("user/Observation.rs")
    typed = (await secure_client.get("/Observation", params=params, headers=only_observations)).json()
    assert _ids(typed, "include") == set()  # no Patient or Practitioner scope: nothing of theirs included


async def test_chains_do_not_reveal_another_patient(
    secure_client: httpx.AsyncClient, issuer: Issuer, world: World, anna_reads: dict[str, str]
) -> None:
    """Anna's Observation names Bram as performer: chaining into Bram's name must find nothing for Anna."""
    params = {"performer:Patient.family": world.bram_family}
    admin = (await secure_client.get("/Observation", params=params, headers=issuer.headers(ADMIN))).json()
    assert _ids(admin) == {f"Observation/{world.anna_observation}"}
    assert (await secure_client.get("/Observation", params=params, headers=anna_reads)).json()["total"] == 0
    subject_chain = {"subject:Patient.family": world.bram_family}
    assert (await secure_client.get("/Observation", params=subject_chain, headers=anna_reads)).json()["total"] == 0
    _forbidden(await secure_client.get("/Observation", params=params, headers=issuer.headers("user/Observation.rs")))


async def test_has_does_not_reveal_another_patient(
    secure_client: httpx.AsyncClient, issuer: Issuer, world: World, anna_reads: dict[str, str]
) -> None:
    """Whether the practitioner performed an Observation with Bram's code is Bram's data."""
    params = {"_has:Observation:performer:code": world.bram_code}
    admin = (await secure_client.get("/Practitioner", params=params, headers=issuer.headers(ADMIN))).json()
    assert _ids(admin) == {f"Practitioner/{world.practitioner}"}
    assert (await secure_client.get("/Practitioner", params=params, headers=anna_reads)).json()["total"] == 0
    own = {"_has:Observation:performer:code": world.anna_code}
    assert _ids((await secure_client.get("/Practitioner", params=own, headers=anna_reads)).json()) == {f"Practitioner/{world.practitioner}"}


async def test_history_stays_in_the_patients_compartment(secure_client: httpx.AsyncClient, world: World, anna_reads: dict[str, str]) -> None:
    _forbidden(await secure_client.get(f"/Patient/{world.bram}/_history", headers=anna_reads))
    typed = (await secure_client.get("/Observation/_history", params={"_count": "200"}, headers=anna_reads)).json()
    seen = {e["resource"]["id"] for e in typed["entry"] if "resource" in e}
    assert world.anna_observation in seen and world.bram_observation not in seen
    system = (await secure_client.get("/_history", params={"_count": "200"}, headers=anna_reads)).json()
    ids = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in system["entry"] if "resource" in e}
    assert f"Patient/{world.anna}" in ids
    assert not ids & {f"Patient/{world.bram}", f"Observation/{world.bram_observation}"}
    assert not {i.split("/")[0] for i in ids} & {"AuditEvent", "Bundle"}


async def test_writes_stay_in_the_patients_compartment(
    secure_client: httpx.AsyncClient, issuer: Issuer, world: World, anna_writes: dict[str, str]
) -> None:
    mine = await secure_client.post("/Observation", json=observation(f"Patient/{world.anna}"), headers=anna_writes)
    assert mine.status_code == 201
    _forbidden(await secure_client.post("/Observation", json=observation(f"Patient/{world.bram}"), headers=anna_writes))
    _forbidden(await secure_client.post("/Patient", json=patient(), headers=anna_writes))  # a new patient is not Anna
    moved = {**mine.json(), "subject": {"reference": f"Patient/{world.bram}"}}
    _forbidden(await secure_client.put(f"/Observation/{mine.json()['id']}", json=moved, headers=anna_writes))
    patch = [{"op": "replace", "path": "/subject/reference", "value": f"Patient/{world.bram}"}]
    patch_headers = {**anna_writes, "Content-Type": "application/json-patch+json"}
    _forbidden(await secure_client.patch(f"/Observation/{mine.json()['id']}", json=patch, headers=patch_headers))
    bram_obs = (await secure_client.get(f"/Observation/{world.bram_observation}", headers=issuer.headers(ADMIN))).json()
    _forbidden(await secure_client.put(f"/Observation/{world.bram_observation}", json={**bram_obs, "status": "amended"}, headers=anna_writes))
    _forbidden(await secure_client.delete(f"/Observation/{world.bram_observation}", headers=anna_writes))
    gone = await secure_client.delete(f"/Observation?code={world.bram_code}", headers=anna_writes)
    assert gone.status_code == 204  # Bram's Observation is invisible to Anna's token: nothing matched
    history = (await secure_client.get(f"/Observation/{world.bram_observation}/_history", headers=issuer.headers(ADMIN))).json()
    assert history["total"] == 1  # untouched


async def test_transactions_stay_in_the_patients_compartment(
    secure_client: httpx.AsyncClient, issuer: Issuer, world: World, anna_writes: dict[str, str]
) -> None:
    for entry in [
        {"resource": observation(f"Patient/{world.bram}"), "request": {"method": "POST", "url": "Observation"}},
        {"request": {"method": "GET", "url": f"Patient/{world.bram}"}},
        {"request": {"method": "DELETE", "url": f"Observation/{world.bram_observation}"}},
    ]:
        _forbidden(await secure_client.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": [entry]}, headers=anna_writes))
    # a conditional reference never resolves to another patient
    by_identifier = {"resource": observation(f"Patient?identifier={world.bram_identifier}"), "request": {"method": "POST", "url": "Observation"}}
    response = await secure_client.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": [by_identifier]}, headers=anna_writes)
    assert response.status_code == 412
    search = {"request": {"method": "GET", "url": f"Observation?code={world.bram_code}"}}
    found = await secure_client.post("/", json={"resourceType": "Bundle", "type": "batch", "entry": [search]}, headers=anna_writes)
    assert found.json()["entry"][0]["resource"]["total"] == 0
    mine = {"resource": observation(f"Patient/{world.anna}"), "request": {"method": "POST", "url": "Observation"}}
    ok = await secure_client.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": [mine]}, headers=anna_writes)
    assert ok.status_code == 200, ok.text
    history = await secure_client.get(f"/Observation/{world.bram_observation}/_history", headers=issuer.headers(ADMIN))
    assert history.json()["total"] == 1  # untouched


# ---------------------------------------------------------------- operations: a $apply-shaped one


async def _apply(context: FhirContext, call: OperationCall) -> OperationResult:
    """Like PlanDefinition/$apply: a RequestGroup for `subject`; with `reveal`, it also (wrongly) returns
    that Patient, to show the result check catches an operation that leaks."""
    parameters = dict(call.query)
    subject = parameters.get("subject", "")
    group = {"resourceType": "RequestGroup", "status": "draft", "intent": "proposal", "subject": {"reference": subject}}
    if "reveal" not in parameters:
        return OperationResult(group)
    leaked = await resources.read(context, "Patient", parameters["reveal"])
    entries = [{"resource": group}, {"resource": json.loads(leaked.content or b"{}")}]
    return OperationResult({"resourceType": "Bundle", "type": "collection", "entry": entries})


@pytest.fixture(scope="module")
def apply_operation(secure_app: FastAPI) -> None:
    operation = Operation(
        code="leaky-apply",
        definition="http://backpath.dev/fhir/OperationDefinition/test-leaky-apply",
        resource_types=frozenset({"PlanDefinition"}),
        type_level=True,
        instance_level=True,
        system_level=False,
        affects_state=False,
        handler=_apply,
    )
    registry = secure_app.state.operations
    if all(op.code != "leaky-apply" for op in registry.operations):
        registry.operations.append(operation)


async def test_an_operation_for_another_patient_is_refused(
    secure_client: httpx.AsyncClient, world: World, anna_reads: dict[str, str], apply_operation: None
) -> None:
    plan = "http://backpath.dev/fhir/PlanDefinition/nl-zel"
    mine = await secure_client.get("/PlanDefinition/$apply", params={"url": plan, "subject": f"Patient/{world.anna}"}, headers=anna_reads)
    assert mine.status_code == 200, mine.text
    _forbidden(await secure_client.get("/PlanDefinition/$apply", params={"url": plan, "subject": f"Patient/{world.bram}"}, headers=anna_reads))
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "url", "valueUri": plan}, {"name": "subject", "valueString": f"Patient/{world.bram}"}],
    }
    _forbidden(await secure_client.post("/PlanDefinition/$apply", json=body, headers=anna_reads))
    # An operation whose result would carry another patient's data is stopped by the result check.
    assert (await secure_client.get("/PlanDefinition/$leaky-apply", params={"subject": f"Patient/{world.anna}"}, headers=anna_reads)).status_code == 200
    leak = {"subject": f"Patient/{world.anna}", "reveal": world.bram}
    _forbidden(await secure_client.get("/PlanDefinition/$leaky-apply", params=leak, headers=anna_reads))
    _forbidden(await secure_client.get(f"/Observation/{world.bram_observation}/$validate", params={"mode": "delete"}, headers=anna_reads))


# ---------------------------------------------------------------- operations that read or write more than their instance

_SDC = "http://hl7.org/fhir/uv/sdc/StructureDefinition"


def _observation_lookup(code: str) -> dict[str, Any]:
    """A Questionnaire whose x-fhir-query variable looks up Observations by code and whose one item
    shows whose they are: a $populate that ran the query with more access would show Bram."""
    launch = {"url": f"{_SDC}/sdc-questionnaire-launchContext", "extension": [
        {"url": "name", "valueCoding": {"system": "http://hl7.org/fhir/uv/sdc/CodeSystem/launchContext", "code": "patient"}},
        {"url": "type", "valueCode": "Patient"}]}
    variable = {"url": "http://hl7.org/fhir/StructureDefinition/variable",
                "valueExpression": {"name": "found", "language": "application/x-fhir-query", "expression": f"Observation?code={code}"}}
    initial = {"url": f"{_SDC}/sdc-questionnaire-initialExpression",
               "valueExpression": {"language": "text/fhirpath", "expression": "%found.entry.resource.subject.reference"}}
    return {"resourceType": "Questionnaire", "status": "active", "extension": [launch, variable],
            "item": [{"linkId": "whose", "text": "Whose observation", "type": "string", "extension": [initial]}]}


async def _populate(client: httpx.AsyncClient, headers: dict[str, str], questionnaire: dict[str, Any], *parts: dict[str, Any]) -> httpx.Response:
    body = {"resourceType": "Parameters", "parameter": [{"name": "questionnaire", "resource": questionnaire}, *parts]}
    return await client.post("/Questionnaire/$populate", json=body, headers=headers)


async def test_populate_reads_only_what_the_token_may_read(secure_client: httpx.AsyncClient, world: World, anna_reads: dict[str, str]) -> None:
    me = {"name": "subject", "valueReference": {"reference": f"Patient/{world.anna}"}}
    mine = await _populate(secure_client, anna_reads, _observation_lookup(world.anna_code), me)
    assert mine.status_code == 200, mine.text
    answers = [i.get("answer") for i in mine.json()["parameter"][0]["resource"]["item"]]
    assert answers == [[{"valueString": f"Patient/{world.anna}"}]]
    theirs = await _populate(secure_client, anna_reads, _observation_lookup(world.bram_code), me)
    assert theirs.status_code == 200, theirs.text
    assert [i.get("answer") for i in theirs.json()["parameter"][0]["resource"]["item"]] == [None]
    bram_as_context = {"name": "context", "part": [{"name": "name", "valueString": "patient"},
                                                   {"name": "content", "valueReference": {"reference": f"Patient/{world.bram}"}}]}
    _forbidden(await _populate(secure_client, anna_reads, _observation_lookup(world.bram_code), bram_as_context))


async def test_extract_persists_only_what_the_token_may_write(
    secure_client: httpx.AsyncClient, issuer: Issuer, world: World, anna_writes: dict[str, str]
) -> None:
    def persisting(subject: str) -> dict[str, Any]:
        response = sbst_response([True] * 8, "extremely", subject={"reference": subject})
        return {"resourceType": "Parameters", "parameter": [{"name": "questionnaire-response", "resource": response},
                                                            {"name": "persist", "valueBoolean": True}]}

    _forbidden(await secure_client.post("/QuestionnaireResponse/$extract", json=persisting(f"Patient/{world.bram}"), headers=anna_writes))
    stored = await secure_client.get("/QuestionnaireResponse", params={"subject": f"Patient/{world.bram}"}, headers=issuer.headers(ADMIN))
    assert stored.json().get("entry", []) == []
    mine = await secure_client.post("/QuestionnaireResponse/$extract", json=persisting(f"Patient/{world.anna}"), headers=anna_writes)
    assert mine.status_code == 200, mine.text


async def test_an_operation_that_changes_data_cannot_be_invoked_with_get(
    secure_client: httpx.AsyncClient, issuer: Issuer, world: World
) -> None:
    refused = await secure_client.get(f"/Task/{unique('task')}/$cancel", headers=issuer.headers(ADMIN))
    assert refused.status_code == 405, refused.text
    assert refused.json()["resourceType"] == "OperationOutcome"


async def test_process_message_needs_messageheader_create_not_every_type(secure_client: httpx.AsyncClient, issuer: Issuer) -> None:
    message = {"resourceType": "Bundle", "type": "message", "entry": []}
    _forbidden(await secure_client.post("/$process-message", json=message, headers=issuer.headers("user/Patient.cruds")))
    answered = await secure_client.post("/$process-message", json=message, headers=issuer.headers("system/MessageHeader.c"))
    assert answered.status_code != 403, answered.text
    assert answered.json()["resourceType"] in ("Bundle", "OperationOutcome")
