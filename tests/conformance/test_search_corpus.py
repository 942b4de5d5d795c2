"""Search checked against the official R4 examples by an independent route.

With every accepted example loaded, each search below runs on the server, and the expected ids are
computed here without the server's code: the official SearchParameter expression (read from the
shared definitions, not the vendored copy) is evaluated with fhirpathpy over the example files and
the R4 matching rules, written out again below, are applied. Only example resources count: other
tests' data in the same database is filtered out by id.
"""

from __future__ import annotations

import calendar
import json
import re
import unicodedata
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhirpathpy import evaluate
from fhirpathpy.models import models

R4 = models["r4"]

# (resource type, parameter as sent, value) — every type, modifier and prefix the server claims.
SEARCHES: list[tuple[str, str, str]] = [
    # string: default starts-with (case- and accent-insensitive), :exact, :contains, complex types
    ("Patient", "family", "chalmers"),
    ("Patient", "family", "CHAL"),
    ("Patient", "family:exact", "Chalmers"),
    ("Patient", "family:exact", "chalmers"),
    ("Patient", "family:contains", "alm"),
    ("Patient", "given", "jim"),
    ("Patient", "name", "peter"),
    ("Patient", "address-city", "pleasant"),
    ("Patient", "address", "534 erewhon"),
    ("Practitioner", "name", "adam"),
    ("Organization", "name", "health"),
    ("Organization", "name:contains", "care"),
    # token: code, system|code, |code, system|, :not, :text, :missing, identifiers, booleans
    ("Patient", "gender", "male"),
    ("Patient", "gender:not", "male"),
    ("Patient", "gender:missing", "true"),
    ("Patient", "active", "true"),
    ("Patient", "identifier", "urn:oid:1.2.36.146.595.217.0.1|12345"),
    ("Patient", "identifier", "12345"),
    ("Patient", "identifier", "urn:oid:1.2.36.146.595.217.0.1|"),
    ("Observation", "code", "http://loinc.org|29463-7"),
    ("Observation", "code", "29463-7"),
    ("Observation", "code", "http://loinc.org|"),
    ("Observation", "code", "|body-weight"),
    ("Observation", "code", "http://loinc.org|85354-9,http://loinc.org|29463-7"),
    ("Observation", "code:text", "body weight"),
    ("Observation", "category", "vital-signs"),
    ("Observation", "status:not", "final"),
    ("Observation", "value-concept:missing", "false"),
    ("Condition", "clinical-status", "active"),
    ("MedicationRequest", "status", "active"),
    ("ServiceRequest", "intent", "order"),
    ("Task", "status", "requested,in-progress"),
    ("Encounter", "class", "http://terminology.hl7.org/CodeSystem/v3-ActCode|IMP"),
    ("Patient", "telecom", "phone|(03) 5555 6473"),
    # reference: Type/id, id, :Type, :missing, absolute URL
    ("Observation", "subject", "Patient/example"),
    ("Observation", "subject", "example"),
    ("Observation", "subject:Patient", "example"),
    ("Observation", "patient", "Patient/example"),
    ("Observation", "performer:missing", "true"),
    ("Condition", "subject", "Patient/example"),
    ("Encounter", "patient", "Patient/example"),
    ("MedicationRequest", "requester", "Practitioner/f007"),
    ("Patient", "general-practitioner", "Practitioner/example"),
    ("Observation", "subject", "http://testserver/Patient/example"),
    # date: eq (partial), ne, gt, lt, ge, le, sa, eb, ap; Periods
    ("Patient", "birthdate", "1974-12-25"),
    ("Patient", "birthdate", "1974"),
    ("Patient", "birthdate", "ne1974-12-25"),
    ("Patient", "birthdate", "gt1990"),
    ("Patient", "birthdate", "lt1950"),
    ("Patient", "birthdate", "ge1974-12-25"),
    ("Patient", "birthdate", "le1974-12-25"),
    ("Observation", "date", "2016-03-28"),
    ("Observation", "date", "gt2013-04-02"),
    ("Observation", "date", "sa2012-09-17"),
    ("Observation", "date", "eb2013"),
    ("Observation", "date", "ap2013-04-02"),
    ("Encounter", "date", "ge2013-03-01"),
    ("Encounter", "date", "2015-01"),
    ("Condition", "onset-date", "le2013"),
    ("Procedure", "date", "lt2014"),
    # number
    ("RiskAssessment", "probability", "gt0.001"),
    ("RiskAssessment", "probability", "0.02"),
    ("MolecularSequence", "variant-start", "le22125500"),
    ("MolecularSequence", "window-start", "ge22125500"),
    ("ChargeItem", "factor-override", "0.8"),
    # quantity: value, prefixes, system|code, ||unit
    ("Observation", "value-quantity", "185|http://unitsofmeasure.org|[lb_av]"),
    ("Observation", "value-quantity", "gt100"),
    ("Observation", "value-quantity", "lt10||mmol/L"),
    ("Observation", "value-quantity", "ge6.3"),
    ("Observation", "component-value-quantity", "107"),
    # uri
    ("Questionnaire", "url", "http://hl7.org/fhir/Questionnaire/gcs"),
    ("Questionnaire", "url:below", "http://hl7.org/fhir/Questionnaire"),
    ("PlanDefinition", "url", "http://example.org/PlanDefinition/zika-virus-intervention"),
    ("PlanDefinition", "url:below", "http://hl7.org/fhir/ig/opioid-cds"),
    ("PlanDefinition", "url:above", "http://hl7.org/fhir/ig/opioid-cds/PlanDefinition/opioidcds-04/extra"),
    # composite
    ("Observation", "code-value-quantity", "http://loinc.org|29463-7$gt180"),
    ("Observation", "component-code-value-quantity", "http://loinc.org|8480-6$107"),
    ("Observation", "combo-code-value-quantity", "http://loinc.org|8462-4$lt70"),
    ("Observation", "code-value-concept", "http://loinc.org|883-9$http://snomed.info/sct|112144000"),
    # common parameters
    ("Observation", "_profile", "http://hl7.org/fhir/StructureDefinition/vitalsigns"),
    ("Patient", "_id", "example,pat1"),
]


def _definitions(shared_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    bundle = json.loads((shared_dir / "conformance" / "hl7.fhir.r4.examples" / "Bundle-searchParams.json").read_text())
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in bundle["entry"]:
        definition = entry["resource"]
        for base in definition["base"]:
            found[(base, definition["code"])] = definition
    return found


@cache
def _all_definitions(shared: str) -> dict[tuple[str, str], dict[str, Any]]:
    return _definitions(Path(shared))


def _definition(shared_dir: Path, resource_type: str, code: str) -> dict[str, Any]:
    definitions = _all_definitions(str(shared_dir))
    return definitions.get((resource_type, code)) or definitions[("Resource", code)]


def _values(expression: str, resource: dict[str, Any]) -> list[Any]:
    """The official expression over the example, with the two rewrites fhirpathpy needs."""
    rewritten = re.sub(r"\.where\(resolve\(\) is (\w+)\)", r".where(reference.startsWith('\1/'))", expression)
    rewritten = rewritten.replace("Resource.", f"{resource['resourceType']}.")
    # fhirpathpy's `as` wants a single item on its left; ofType() is the same filter over a collection.
    rewritten = re.sub(r"\(([\w.]+) as (\w+)\)", r"\1.ofType(\2)", rewritten)
    return list(evaluate(resource, rewritten, model=R4))


# ---- the matching rules of https://hl7.org/fhir/R4/search.html, written out independently ----


def _fold(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).casefold()


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        parts = ("family", "given", "text", "prefix", "suffix", "line", "city", "district", "state", "postalCode", "country")
        return [s for key in parts if key in value for s in _strings(value[key])]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def _string_match(value: Any, wanted: str, modifier: str) -> bool:
    for text in _strings(value):
        if modifier == "exact" and text == wanted:
            return True
        if modifier == "contains" and _fold(wanted) in _fold(text):
            return True
        if modifier == "" and _fold(text).startswith(_fold(wanted)):
            return True
    return False


def _codes(value: Any) -> list[tuple[str | None, str | None, str]]:
    """(system, code, text) pairs a token element offers."""
    if isinstance(value, bool):
        return [(None, str(value).lower(), "")]
    if isinstance(value, str):
        return [(None, value, "")]
    if not isinstance(value, dict):
        return []
    if "coding" in value or ("text" in value and "value" not in value):
        return [(c.get("system"), c.get("code"), value.get("text") or c.get("display") or "") for c in value.get("coding", [])] or [
            (None, None, value.get("text", ""))
        ]
    if "value" in value:
        return [(value.get("system"), str(value["value"]), "")]
    return [(value.get("system"), value.get("code"), value.get("display") or "")]


def _token_match(value: Any, wanted: str, modifier: str) -> bool:
    for system, code, text in _codes(value):
        if modifier == "text":
            if _fold(text).startswith(_fold(wanted)):
                return True
            continue
        if "|" not in wanted:
            if code == wanted:
                return True
            continue
        want_system, want_code = wanted.split("|", 1)
        if want_system == "" and system is None and code == want_code:
            return True
        if want_system and system == want_system and (want_code == "" or code == want_code):
            return True
    return False


def _reference_match(value: Any, wanted: str, target_type: str | None) -> bool:
    reference = value.get("reference") if isinstance(value, dict) else value
    if not isinstance(reference, str):
        return False
    wanted = wanted.removeprefix("http://testserver/")
    if "/" in wanted:
        return reference == wanted or reference.endswith("/" + wanted)
    kind, _, ident = reference.rpartition("/")
    return ident == wanted and (target_type is None or kind.endswith(target_type))


def _date_bounds(text: str) -> tuple[datetime, datetime] | None:
    match = re.fullmatch(r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?", text)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    if month is None:
        return datetime(int(year), 1, 1), datetime(int(year), 12, 31, 23, 59, 59, 999999)
    if day is None:
        last = calendar.monthrange(int(year), int(month))[1]
        return datetime(int(year), int(month), 1), datetime(int(year), int(month), last, 23, 59, 59, 999999)
    if hour is None:
        start = datetime(int(year), int(month), int(day))
        return start, start + timedelta(days=1) - timedelta(microseconds=1)
    start = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0))
    if fraction:
        start = start.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    end = start if fraction else start + (timedelta(seconds=1) if second else timedelta(minutes=1)) - timedelta(microseconds=1)
    if zone and zone != "Z":
        shift = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])) * (1 if zone[0] == "+" else -1)
        start, end = start - shift, end - shift
    return start, end


def _target_dates(value: Any) -> tuple[datetime, datetime] | None:
    if isinstance(value, str):
        return _date_bounds(value)
    if isinstance(value, dict) and ("start" in value or "end" in value):
        low = _date_bounds(value["start"]) if value.get("start") else None
        high = _date_bounds(value["end"]) if value.get("end") else None
        return (low[0] if low else datetime.min, high[1] if high else datetime.max)
    return None


def _date_match(value: Any, wanted: str) -> bool:
    prefix, text = (wanted[:2], wanted[2:]) if wanted[:2].isalpha() else ("eq", wanted)
    target, search = _target_dates(value), _date_bounds(text)
    assert search is not None
    if target is None:
        return False
    (tl, th), (sl, sh) = target, search
    inside = tl >= sl and th <= sh
    if prefix == "ap":
        gap = max(abs(datetime.now() - sl), timedelta(days=1)) * 0.1
        return tl <= sh + gap and th >= sl - gap
    return {
        "eq": inside,
        "ne": not inside,
        "gt": th > sh,
        "lt": tl < sl,
        "ge": th > sh or inside,
        "le": tl < sl or inside,
        "sa": tl > sh,
        "eb": th < sl,
    }[prefix]


def _number_match(number: float, wanted: str) -> bool:
    prefix, text = (wanted[:2], wanted[2:]) if wanted[:2].isalpha() else ("eq", wanted)
    value = Decimal(text)
    exponent = value.as_tuple().exponent
    half = Decimal(5).scaleb(int(exponent) - 1) if isinstance(exponent, int) else Decimal(0)
    low, high = float(value - half), float(value + half)
    return {
        "eq": low <= number < high,
        "ne": not low <= number < high,
        "gt": number > float(value),
        "lt": number < float(value),
        "ge": number >= float(value),
        "le": number <= float(value),
        "sa": number > float(value),
        "eb": number < float(value),
    }[prefix]


def _quantity_match(value: Any, wanted: str) -> bool:
    number, _, unit = wanted.partition("|")
    system, _, code = unit.partition("|") if "|" in unit else ("", "", unit)
    if not isinstance(value, dict) or not isinstance(value.get("value"), int | float | Decimal):
        return False
    if code and code not in (value.get("code"), value.get("unit")):
        return False
    if system and value.get("system") != system:
        return False
    return _number_match(float(value["value"]), number)


def _component(element: dict[str, Any], expression: str) -> list[Any]:
    """A composite's component expression on its element: `code` or `value.as(Type)`."""
    found = []
    for part in (p.strip() for p in expression.split("|")):
        typed = re.fullmatch(r"value\.as\((\w+)\)", part)
        key = f"value{typed.group(1)[0].upper()}{typed.group(1)[1:]}" if typed else part
        item = element.get(key)
        found += item if isinstance(item, list) else [item] if item is not None else []
    return found


def _matches(shared_dir: Path, resource: dict[str, Any], code: str, modifier: str, wanted: str) -> bool:
    definition = _definition(shared_dir, resource["resourceType"], code)
    kind = definition["type"]
    if code == "_id":
        return resource["id"] in wanted.split(",")
    values = _values(definition["expression"], resource)
    if modifier == "missing":
        return (not values) == (wanted == "true")
    alternatives = wanted.split(",")
    if kind == "token" and modifier == "not":
        return not any(_token_match(v, w, "") for v in values for w in alternatives)
    if kind == "composite":
        first, second = (c for c in definition["component"])
        second_kind = _definition_by_url(shared_dir, second["definition"])["type"]
        want_first, want_second = wanted.split("$")
        for element in values:
            firsts = _component(element, first["expression"])
            seconds = _component(element, second["expression"])
            if any(_token_match(f, want_first, "") for f in firsts) and any(
                _quantity_match(s, want_second) if second_kind == "quantity" else _token_match(s, want_second, "")
                for s in seconds
            ):
                return True
        return False
    for value in values:
        for want in alternatives:
            if kind == "string" and _string_match(value, want, modifier):
                return True
            if kind == "token" and _token_match(value, want, modifier):
                return True
            if kind == "reference" and _reference_match(value, want, modifier or None):
                return True
            if kind == "date" and _date_match(value, want):
                return True
            if kind == "number" and isinstance(value, int | float | Decimal) and _number_match(float(value), want):
                return True
            if kind == "quantity" and _quantity_match(value, want):
                return True
            if kind == "uri" and isinstance(value, str) and (
                value == want or (modifier == "below" and value.startswith(want)) or (modifier == "above" and want.startswith(value))
            ):
                return True
    return False


def _definition_by_url(shared_dir: Path, url: str) -> dict[str, Any]:
    return next(d for d in _all_definitions(str(shared_dir)).values() if d.get("url") == url)


@pytest.mark.parametrize(("resource_type", "parameter", "value"), SEARCHES, ids=[f"{t}?{p}={v}" for t, p, v in SEARCHES])
async def test_search_over_the_examples_matches_the_independent_evaluation(
    roomy_client: httpx.AsyncClient,
    loaded_examples: dict[str, list[dict[str, Any]]],
    shared_dir: Path,
    resource_type: str,
    parameter: str,
    value: str,
) -> None:
    examples = {r["id"]: r for r in loaded_examples.get(resource_type, [])}
    code, _, modifier = parameter.partition(":")
    expected = {i for i, r in examples.items() if _matches(shared_dir, r, code, modifier, value)}
    found: set[str] = set()
    url: str | None = f"/{resource_type}"
    params: dict[str, str] | None = {parameter: value, "_count": "1000", "_elements": "id", "_total": "none"}
    while url:  # other tests' data shares the database: follow every page
        response = await roomy_client.get(url, params=params, headers={"Prefer": "handling=strict"})
        assert response.status_code == 200, response.text
        found |= {e["resource"]["id"] for e in response.json().get("entry", []) if e["search"]["mode"] == "match"}
        url, params = next((link["url"] for link in response.json()["link"] if link["relation"] == "next"), None), None
    assert found & examples.keys() == expected


def test_most_searches_expect_some_examples(loaded_examples: dict[str, list[dict[str, Any]]], shared_dir: Path) -> None:
    """Guard against a list of searches that trivially agree on "nothing found"."""
    non_empty = 0
    for resource_type, parameter, value in SEARCHES:
        code, _, modifier = parameter.partition(":")
        examples = loaded_examples.get(resource_type, [])
        non_empty += any(_matches(shared_dir, r, code, modifier, value) for r in examples)
    assert non_empty >= 0.8 * len(SEARCHES), f"only {non_empty} of {len(SEARCHES)} searches expect a match"


def test_the_searches_cover_every_type_and_find_something(shared_dir: Path) -> None:
    kinds = {_definition(shared_dir, t, p.partition(":")[0])["type"] for t, p, _ in SEARCHES}
    assert kinds >= {"string", "token", "reference", "date", "number", "quantity", "uri", "composite"}
    assert len(SEARCHES) >= 60
    modifiers = {p.partition(":")[2] for _, p, _ in SEARCHES} - {""}
    assert modifiers >= {"exact", "contains", "not", "text", "missing", "below", "Patient"}
    prefixes = {v[:2] for _, _, v in SEARCHES if v[:2] in ("ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")}
    assert prefixes == {"ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"}
