"""Search by every parameter type, modifier and prefix, with includes, sorting and paging.

Each test makes its own data under a unique marker (a code, a family name, an identifier system)
so the shared database of a run never leaks into its assertions.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.factories import FHIR_JSON, observation, patient, unique


async def _create(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _ids(client: httpx.AsyncClient, resource_type: str, params: dict[str, str] | list[tuple[str, str]]) -> set[str]:
    response = await client.get(f"/{resource_type}", params=params, headers={"Prefer": "handling=strict"})
    assert response.status_code == 200, response.text
    return {e["resource"]["id"] for e in response.json().get("entry", []) if e["search"]["mode"] == "match"}


async def test_string_search_is_prefix_case_and_accent_insensitive_with_exact_and_contains(client: httpx.AsyncClient) -> None:
    marker = unique("Zz")
    hansen = await _create(client, patient(family=f"{marker}Højgård"))
    other = await _create(client, patient(family=f"{marker}Hansen"))
    assert await _ids(client, "Patient", {"family": f"{marker.lower()}HØJGA"}) == {hansen["id"]}  # ø is a letter, å an accented a
    assert await _ids(client, "Patient", {"family": marker}) == {hansen["id"], other["id"]}
    assert await _ids(client, "Patient", {"family:exact": f"{marker}Højgård"}) == {hansen["id"]}
    assert await _ids(client, "Patient", {"family:exact": f"{marker}højgard"}) == set()
    assert await _ids(client, "Patient", {"family:contains": "ANSEN", "name": marker}) == {other["id"]}
    assert await _ids(client, "Patient", {"name": marker, "given": "ann"}) == {hansen["id"], other["id"]}


async def test_token_search_with_not_text_and_missing(client: httpx.AsyncClient) -> None:
    system = f"urn:{unique('sys')}"
    first = await _create(client, patient(identifier=[{"system": system, "value": "1"}], gender="female"))
    second = await _create(client, patient(identifier=[{"system": system, "value": "2"}], gender="male"))
    third = await _create(client, patient(identifier=[{"system": system, "value": "3"}]))
    everyone = {first["id"], second["id"], third["id"]}
    assert await _ids(client, "Patient", {"identifier": f"{system}|", "gender": "female"}) == {first["id"]}
    assert await _ids(client, "Patient", {"identifier": f"{system}|", "gender:not": "female"}) == {second["id"], third["id"]}
    assert await _ids(client, "Patient", {"identifier": f"{system}|", "gender:missing": "true"}) == {third["id"]}
    assert await _ids(client, "Patient", {"identifier": f"{system}|", "gender:missing": "false"}) == {first["id"], second["id"]}
    assert await _ids(client, "Patient", {"identifier": f"{system}|1,{system}|3"}) == {first["id"], third["id"]}
    assert await _ids(client, "Patient", [("identifier", f"{system}|"), ("identifier", f"{system}|2")]) == {second["id"]}
    assert everyone == await _ids(client, "Patient", {"identifier": f"{system}|"})


async def test_token_text_searches_the_display(client: httpx.AsyncClient) -> None:
    subject = await _create(client, patient())
    code = unique("code")
    coded = observation(f"Patient/{subject['id']}", code=code)
    coded["code"]["coding"][0]["display"] = "Pijn in de onderrug"
    found = await _create(client, coded)
    assert await _ids(client, "Observation", {"subject": f"Patient/{subject['id']}", "code:text": "pijn in"}) == {found["id"]}


async def test_reference_search_by_type_and_id_bare_id_and_absolute_url(client: httpx.AsyncClient) -> None:
    subject = await _create(client, patient())
    measured = await _create(client, observation(f"Patient/{subject['id']}"))
    reference = f"Patient/{subject['id']}"
    assert await _ids(client, "Observation", {"subject": reference}) == {measured["id"]}
    assert await _ids(client, "Observation", {"subject": subject["id"]}) == {measured["id"]}
    assert await _ids(client, "Observation", {"subject:Patient": subject["id"]}) == {measured["id"]}
    assert await _ids(client, "Observation", {"patient": f"http://testserver/{reference}"}) == {measured["id"]}
    assert await _ids(client, "Observation", {"subject": f"Group/{subject['id']}"}) == set()


async def test_chained_and_reverse_chained_search(client: httpx.AsyncClient) -> None:
    mrn = unique("mrn")
    subject = await _create(client, patient(identifier=[{"system": "urn:chain", "value": mrn}]))
    code = unique("code")
    measured = await _create(client, observation(f"Patient/{subject['id']}", code=code))
    assert await _ids(client, "Observation", {"subject:Patient.identifier": f"urn:chain|{mrn}"}) == {measured["id"]}
    assert await _ids(client, "Observation", {"patient.identifier": f"urn:chain|{mrn}"}) == {measured["id"]}
    assert await _ids(client, "Patient", {"_has:Observation:subject:code": code}) == {subject["id"]}
    assert await _ids(client, "Patient", {"_has:Observation:subject:code": unique("none")}) == set()


async def test_date_prefixes_on_dates_and_periods(client: httpx.AsyncClient) -> None:
    code = unique("code")
    subject = await _create(client, patient())
    on_day = await _create(client, observation(f"Patient/{subject['id']}", code=code, effectiveDateTime="2026-03-10T10:00:00Z"))
    spanning = await _create(
        client,
        observation(f"Patient/{subject['id']}", code=code, effectivePeriod={"start": "2026-03-01", "end": "2026-03-31"}),
    )
    later = await _create(client, observation(f"Patient/{subject['id']}", code=code, effectiveDateTime="2026-05-01"))
    every = {on_day["id"], spanning["id"], later["id"]}

    async def dates(value: str) -> set[str]:
        return await _ids(client, "Observation", {"code": code, "date": value})

    assert await dates("2026-03-10") == {on_day["id"]}
    assert await dates("2026-03") == {on_day["id"], spanning["id"]}
    assert await dates("ne2026-03") == {later["id"]}
    assert await dates("gt2026-03-10") == {spanning["id"], later["id"]}
    assert await dates("lt2026-03-10") == {spanning["id"]}
    assert await dates("ge2026-03-10") == {on_day["id"], spanning["id"], later["id"]}
    assert await dates("le2026-03-10") == {on_day["id"], spanning["id"]}
    assert await dates("sa2026-03-31") == {later["id"]}
    assert await dates("eb2026-05-01") == {on_day["id"], spanning["id"]}
    assert await dates("ap2026-05-01") >= {later["id"]}
    assert await _ids(client, "Observation", [("code", code), ("date", "ge2026-03-01"), ("date", "lt2026-04-01")]) == {
        on_day["id"],
        spanning["id"],
    }
    assert every == await _ids(client, "Observation", {"code": code})


async def test_number_and_quantity_prefixes(client: httpx.AsyncClient) -> None:
    code = unique("code")
    subject = await _create(client, patient())

    def measured(value: float) -> dict[str, Any]:
        body = observation(f"Patient/{subject['id']}", code=code)
        del body["valueInteger"]
        body["valueQuantity"] = {"value": value, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}
        return body

    light, heavy = await _create(client, measured(70)), await _create(client, measured(100.4))

    async def quantity(value: str) -> set[str]:
        return await _ids(client, "Observation", {"code": code, "value-quantity": value})

    assert await quantity("100") == {heavy["id"]}
    assert await quantity("100.0") == set()
    assert await quantity("gt80") == {heavy["id"]}
    assert await quantity("le70|http://unitsofmeasure.org|kg") == {light["id"]}
    assert await quantity("70||kg") == {light["id"]}
    assert await quantity("70|http://unitsofmeasure.org|g") == set()
    assert await _ids(client, "Observation", {"code-value-quantity": f"{code}$gt90"}) == {heavy["id"]}

    risk_subject = f"Patient/{subject['id']}"
    low = await _create(client, {"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": risk_subject}, "prediction": [{"probabilityDecimal": 0.2}]})
    high = await _create(client, {"resourceType": "RiskAssessment", "status": "final", "subject": {"reference": risk_subject}, "prediction": [{"probabilityDecimal": 0.8}]})
    assert await _ids(client, "RiskAssessment", {"subject": risk_subject, "probability": "ge0.5"}) == {high["id"]}
    assert await _ids(client, "RiskAssessment", {"subject": risk_subject, "probability": "0.2"}) == {low["id"]}


async def test_uri_search_exact_and_below(client: httpx.AsyncClient) -> None:
    base = f"http://backpath.test/{unique('vs')}"
    value_set = await _create(client, {"resourceType": "ValueSet", "status": "draft", "url": f"{base}/ValueSet/a"})
    assert await _ids(client, "ValueSet", {"url": f"{base}/ValueSet/a"}) == {value_set["id"]}
    assert await _ids(client, "ValueSet", {"url": f"{base}/ValueSet"}) == set()
    assert await _ids(client, "ValueSet", {"url:below": base}) == {value_set["id"]}


async def test_common_parameters_last_updated_tag_profile(client: httpx.AsyncClient) -> None:
    tag = unique("tag")
    tagged = await _create(client, patient(meta={"tag": [{"system": "urn:tags", "code": tag}], "profile": ["http://example.org/P"]}))
    assert await _ids(client, "Patient", {"_tag": f"urn:tags|{tag}"}) == {tagged["id"]}
    assert await _ids(client, "Patient", {"_tag": f"urn:tags|{tag}", "_profile": "http://example.org/P"}) == {tagged["id"]}
    stamp = tagged["meta"]["lastUpdated"]
    assert await _ids(client, "Patient", {"_tag": tag, "_lastUpdated": f"ge{stamp}"}) == {tagged["id"]}
    assert await _ids(client, "Patient", {"_tag": tag, "_lastUpdated": f"lt{stamp}"}) == set()


async def test_include_revinclude_and_iterate(client: httpx.AsyncClient) -> None:
    organization = await _create(client, {"resourceType": "Organization", "name": unique("org")})
    subject = await _create(client, patient(managingOrganization={"reference": f"Organization/{organization['id']}"}))
    code = unique("code")
    measured = await _create(client, observation(f"Patient/{subject['id']}", code=code))
    bundle = (await client.get("/Observation", params={"code": code, "_include": "Observation:subject"})).json()
    modes = {(e["resource"]["resourceType"], e["search"]["mode"]) for e in bundle["entry"]}
    assert modes == {("Observation", "match"), ("Patient", "include")}
    iterated = (
        await client.get(
            "/Observation",
            params=[("code", code), ("_include", "Observation:subject"), ("_include:iterate", "Patient:organization")],
        )
    ).json()
    assert {e["resource"]["resourceType"] for e in iterated["entry"]} == {"Observation", "Patient", "Organization"}
    reverse = (await client.get("/Patient", params={"_id": subject["id"], "_revinclude": "Observation:subject"})).json()
    assert {(e["resource"]["id"], e["search"]["mode"]) for e in reverse["entry"]} == {
        (subject["id"], "match"),
        (measured["id"], "include"),
    }


async def test_compartment_search_finds_the_patients_resources(client: httpx.AsyncClient) -> None:
    subject = await _create(client, patient())
    someone_else = await _create(client, patient())
    mine = await _create(client, observation(f"Patient/{subject['id']}"))
    await _create(client, observation(f"Patient/{someone_else['id']}"))
    response = await client.get(f"/Patient/{subject['id']}/Observation")
    assert response.status_code == 200
    assert {e["resource"]["id"] for e in response.json()["entry"]} == {mine["id"]}
    assert (await client.get(f"/Patient/{subject['id']}/ValueSet")).status_code == 404


async def test_sort_by_several_keys_and_page_forward_and_back(client: httpx.AsyncClient) -> None:
    system = f"urn:{unique('sort')}"
    births = ["1980-01-01", "1970-01-01", "1990-01-01", "1970-01-01", "1985-06-06"]
    created = [
        await _create(client, patient(family=f"F{i % 2}", identifier=[{"system": system, "value": str(i)}], birthDate=b))
        for i, b in enumerate(births)
    ]
    expected = sorted(created, key=lambda r: (r["birthDate"], r["name"][0]["family"], r["id"]), reverse=False)
    expected = sorted(expected, key=lambda r: r["birthDate"], reverse=True)
    url: str | None = f"/Patient?identifier={system}|&_sort=-birthdate,family&_count=2"
    pages: list[dict[str, Any]] = []
    order: list[str] = []
    while url:
        page = (await client.get(url)).json()
        pages.append(page)
        order += [e["resource"]["id"] for e in page["entry"]]
        url = next((lk["url"] for lk in page["link"] if lk["relation"] == "next"), None)
    by_id = {r["id"]: r for r in created}
    keys = [(by_id[i]["birthDate"], by_id[i]["name"][0]["family"]) for i in order]
    assert len(order) == 5 and len(set(order)) == 5
    assert [k[0] for k in keys] == sorted((k[0] for k in keys), reverse=True)
    assert keys[2:4] == sorted(keys[2:4], key=lambda k: k[1])  # the two 1970 births, by family
    previous = next(lk["url"] for lk in pages[-1]["link"] if lk["relation"] == "previous")
    back = (await client.get(previous)).json()
    assert [e["resource"]["id"] for e in back["entry"]] == order[2:4]


@pytest.mark.parametrize("sort", ["-birthdate", "birthdate", "family", "-family,birthdate"])
async def test_sort_puts_resources_without_the_value_last_and_pages_both_ways(client: httpx.AsyncClient, sort: str) -> None:
    system = f"urn:{unique('nulls')}"
    births = ["1980-01-01", None, "1970-05-05", "1990-01-01", None, "1970-05-05", "1975-01-01"]
    families = ["B", "A", None, "C", None, "A", "B"]
    created = []
    for i, (birth, family) in enumerate(zip(births, families, strict=True)):
        resource = patient(identifier=[{"system": system, "value": str(i)}])
        resource.pop("birthDate")
        resource["name"] = [{"family": family}] if family else []
        if birth:
            resource["birthDate"] = birth
        created.append(await _create(client, {k: v for k, v in resource.items() if v != []}))

    def key_of(resource: dict[str, Any], name: str) -> str | None:
        return resource.get("birthDate") if name == "birthdate" else next((n.get("family", "").lower() for n in resource.get("name", [])), None)

    expected = sorted(created, key=lambda r: r["id"], reverse=sort.startswith("-"))
    for part in reversed(sort.split(",")):
        name = part.lstrip("-")
        present = [r for r in expected if key_of(r, name) is not None]
        missing = [r for r in expected if key_of(r, name) is None]
        expected = sorted(present, key=lambda r, n=name: key_of(r, n) or "", reverse=part.startswith("-")) + missing
    url: str | None = f"/Patient?identifier={system}|&_sort={sort}&_count=2"
    pages: list[dict[str, Any]] = []
    while url:
        pages.append((await client.get(url)).json())
        url = next((lk["url"] for lk in pages[-1]["link"] if lk["relation"] == "next"), None)
    order = [e["resource"]["id"] for page in pages for e in page.get("entry", [])]
    assert order == [r["id"] for r in expected]
    backwards: list[str] = []
    url = next((lk["url"] for lk in pages[-1]["link"] if lk["relation"] == "previous"), None)
    while url:
        page = (await client.get(url)).json()
        backwards = [e["resource"]["id"] for e in page.get("entry", [])] + backwards
        url = next((lk["url"] for lk in page["link"] if lk["relation"] == "previous"), None)
    assert backwards == order[: len(backwards)] and len(backwards) == len(order) - len(pages[-1]["entry"])


@pytest.mark.parametrize("sort", ["subject", "-subject"])
async def test_sort_by_a_reference_orders_by_the_target_and_pages(client: httpx.AsyncClient, sort: str) -> None:
    """A reference sorts by its target's id (no index walks it: it sorts the matches)."""
    code = unique("ref-sort")
    subjects = [await _create(client, patient()) for _ in range(3)]
    created = [await _create(client, observation(f"Patient/{subjects[i % 3]['id']}", code=code)) for i in range(5)]
    created.append(await _create(client, {k: v for k, v in observation("Patient/x", code=code).items() if k != "subject"}))
    with_subject = sorted(created[:5], key=lambda r: (r["subject"]["reference"], r["id"]), reverse=sort.startswith("-"))
    expected = [r["id"] for r in with_subject] + [created[5]["id"]]  # no subject: last either way
    url: str | None = f"/Observation?code={code}&_sort={sort}&_count=2"
    order: list[str] = []
    while url:
        page = (await client.get(url)).json()
        order += [e["resource"]["id"] for e in page.get("entry", [])]
        url = next((lk["url"] for lk in page["link"] if lk["relation"] == "next"), None)
    assert order == expected


async def test_paging_holds_while_others_insert(client: httpx.AsyncClient) -> None:
    """1,000 matches paged 50 at a time while new matching resources keep arriving: every original
    match is seen exactly once."""
    system = f"urn:{unique('page')}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient(identifier=[{"system": system, "value": str(i)}]), "request": {"method": "POST", "url": "Patient"}}
            for i in range(1000)
        ],
    }
    assert (await client.post("/", json=bundle, headers={**FHIR_JSON, "Prefer": "return=minimal"})).status_code == 200
    original = await _ids(client, "Patient", {"identifier": f"{system}|", "_count": "1000", "_elements": "id"})
    assert len(original) == 1000
    seen: list[str] = []
    url: str | None = f"/Patient?identifier={system}|&_count=50&_total=none"

    async def insert_some(n: int) -> None:
        for i in range(n):
            await _create(client, patient(identifier=[{"system": system, "value": f"new-{i}"}]))

    while url:
        page, _ = await asyncio.gather(client.get(url), insert_some(3))
        body = page.json()
        seen += [e["resource"]["id"] for e in body["entry"]]
        url = next((lk["url"] for lk in body["link"] if lk["relation"] == "next"), None)
    assert len(seen) == len(set(seen))
    assert original <= set(seen)


async def test_total_summary_count_and_elements(client: httpx.AsyncClient) -> None:
    system = f"urn:{unique('total')}"
    for i in range(3):
        await _create(client, patient(identifier=[{"system": system, "value": str(i)}]))
    counted = (await client.get("/Patient", params={"identifier": f"{system}|", "_summary": "count"})).json()
    assert counted["total"] == 3 and counted["entry"] == []
    untotalled = (await client.get("/Patient", params={"identifier": f"{system}|", "_total": "none"})).json()
    assert "total" not in untotalled and len(untotalled["entry"]) == 3
    for total in ("accurate", "estimate"):
        paged = (await client.get("/Patient", params={"identifier": f"{system}|", "_total": total, "_count": "1"})).json()
        assert paged["total"] == 3 and len(paged["entry"]) == 1
    # Without _total the total is given only when it is known for free: the first page holds everything.
    whole = (await client.get("/Patient", params={"identifier": f"{system}|"})).json()
    assert whole["total"] == 3
    first_of_two = (await client.get("/Patient", params={"identifier": f"{system}|", "_count": "2"})).json()
    assert "total" not in first_of_two
    slim = (await client.get("/Patient", params={"identifier": f"{system}|", "_elements": "gender"})).json()
    assert all(set(e["resource"]) <= {"resourceType", "id", "meta", "gender"} for e in slim["entry"])


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"birthdate": "2026-13-45"}, "birthdate"),
        ({"birthdate": "xx2026"}, "birthdate"),
        ({"family:fuzzy": "x"}, "family:fuzzy"),
        ({"gender:missing": "perhaps"}, "gender:missing"),
        ({"_count": "ten"}, "_count"),
        ({"_sort": "nonsense"}, "_sort"),
        ({"_include": "Observation"}, "_include"),
        ({"_cursor": "!!!"}, "_cursor"),
        ({"general-practitioner": "not a ref/x/y"}, "general-practitioner"),
        ({"_has:Observation:nope:code": "x"}, "_has:Observation:nope:code"),
        ({"organization.name.family": "x"}, "organization.name.family"),
    ],
)
async def test_malformed_search_values_are_400_naming_the_parameter(
    client: httpx.AsyncClient, params: dict[str, str], named: str
) -> None:
    response = await client.get("/Patient", params=params)
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert named in outcome["issue"][0]["diagnostics"]


_INJECTIONS = ["' OR '1'='1", "x'); DROP TABLE resource; --", "%' OR 1=1 --", "\\", "%", "_", "\"", "1;SELECT 1", "\u0000"]


@pytest.mark.parametrize(
    ("resource_type", "name", "template"),
    [
        ("Patient", "family", "{}"),
        ("Patient", "family:contains", "{}"),
        ("Patient", "identifier", "{}|{}"),
        ("Patient", "gender:text", "{}"),
        ("Observation", "subject", "Patient/{}"),
        ("Observation", "subject:Patient.name", "{}"),
        ("Patient", "_has:Observation:subject:code", "{}"),
        ("Observation", "date", "ge2026-01-01"),
        ("ValueSet", "url", "{}"),
        ("Observation", "code-value-concept", "{}${}"),
        ("Patient", "_id", "{}"),
    ],
)
async def test_injection_strings_never_reach_sql_unbound(client: httpx.AsyncClient, resource_type: str, name: str, template: str) -> None:
    """Each attack runs beside a `_tag` that only one harmless resource carries: any match means the
    attack changed the query instead of being compared as a value."""
    tag = unique("fence")
    await _create(client, {"resourceType": resource_type, **_HARMLESS[resource_type], "meta": {"tag": [{"system": "urn:fence", "code": tag}]}})
    before = (await client.get("/_history", params={"_count": "0"})).json()["total"]
    for attack in _INJECTIONS:
        value = template.replace("{}", attack)
        response = await client.get(f"/{resource_type}", params={name: value, "_tag": f"urn:fence|{tag}"})
        assert response.status_code in (200, 400), (name, attack, response.text)
        if response.status_code == 200 and attack != "\\" and name != "date":  # a lone backslash escapes to nothing
            assert all(e["search"]["mode"] != "match" for e in response.json().get("entry", [])), (name, attack)
    assert (await client.get("/_history", params={"_count": "0"})).json()["total"] == before


_HARMLESS: dict[str, dict[str, Any]] = {
    "Patient": {"name": [{"family": "Harmless"}]},
    "Observation": {"status": "final", "code": {"text": "harmless"}},
    "ValueSet": {"status": "draft", "url": "http://harmless.example/vs"},
}
