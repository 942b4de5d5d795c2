"""Observation-based $extract: one Observation per answer of every item marked for extraction.

Spec: https://hl7.org/fhir/uv/sdc/extraction.html#observation-based-extraction (SDC 4.0).
An item is extracted when `observationExtract` is true on it, on an enclosing item or on the
Questionnaire (SDC 3 put it on `item.code`, which is honoured too) and it has a code. Each
Observation: status final, code = the item's codes, category from `observation-extract-category`,
subject / encounter / basedOn / partOf from the response, effective and issued = authored,
performer = author, value = the answer, derivedFrom = the response. Nothing for unanswered items.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from app.fhir.outcome import Issue
from app.questionnaire.answers import answer_value
from app.questionnaire.extensions import (
    OBSERVATION_EXTRACT,
    OBSERVATION_EXTRACT_CATEGORY,
    UNIT,
    extension_value,
    extensions,
)
from app.questionnaire.tree import QuestionnaireIndex, ResponseNode, response_nodes, walk

__all__ = ["EXTRACT_IDENTIFIER_SYSTEM", "Extraction", "extract_observations"]

# BackPath's own key for an extracted Observation, so extracting the same response again updates
# its Observations instead of adding more (value: "QuestionnaireResponse/<id>/<linkIds>/<answer>").
EXTRACT_IDENTIFIER_SYSTEM = "http://backpath.dev/fhir/sid/extracted-observation"

_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
_NOT_PERFORMERS = ("Device/",)  # QuestionnaireResponse.author may be a Device; Observation.performer not
_NOT_PART_OF = ("Observation/",)  # QuestionnaireResponse.partOf may be an Observation; Observation.partOf not


@dataclass(frozen=True)
class Extraction:
    """The transaction Bundle, and the hints about what could not be extracted."""

    bundle: dict[str, Any]
    issues: tuple[Issue, ...]


def extract_observations(
    questionnaire: dict[str, Any],
    response: dict[str, Any],
    *,
    response_reference: str | None,
    new_id: Callable[[], str],
    include_response: bool = False,
) -> Extraction:
    """The transaction Bundle for `response`.

    `response_reference` ("QuestionnaireResponse/<id>") names the stored response: its
    Observations are then conditional updates on their extraction identifier, so running the
    extraction again changes them rather than adding more. With `include_response` the (unstored)
    response is created by the same transaction and the Observations point at it.
    """
    index = QuestionnaireIndex.of(questionnaire)
    entries: list[dict[str, Any]] = []
    derived_from = response_reference
    if response_reference is None and include_response:
        derived_from = f"urn:uuid:{new_id()}"
        stored = {k: v for k, v in response.items() if k not in ("id", "meta")}
        entries.append({"fullUrl": derived_from, "resource": stored, "request": {"method": "POST", "url": "QuestionnaireResponse"}})
    elif response_reference is None and response.get("id"):
        derived_from = f"QuestionnaireResponse/{response['id']}"
    issues: list[Issue] = []
    for node in walk(response_nodes(index, response)):
        definition = node.definition
        if definition is None or definition.get("type") in ("group", "display") or not _marked(index, definition):
            continue
        codes = [_plain_coding(c) for c in definition.get("code") or [] if isinstance(c, dict)]
        if not codes:
            issues.append(Issue("warning", "incomplete", f"Item '{node.link_id}' is marked for extraction but has no code", (node.path,)))
            continue
        for position, answer in enumerate(a for a in node.item.get("answer") or [] if isinstance(a, dict)):
            value = _observation_value(definition, answer)
            if value is None:
                issues.append(Issue("warning", "not-supported", f"Item '{node.link_id}': answer {position + 1} has no Observation value type", (node.path,)))
                continue
            observation = _observation(index, response, definition, codes, value, derived_from)
            request: dict[str, Any] = {"method": "POST", "url": "Observation"}
            if response_reference is not None:
                key = f"{response_reference}/{'/'.join(_link_ids(node))}/{position}"
                observation["identifier"] = [{"system": EXTRACT_IDENTIFIER_SYSTEM, "value": key}]
                request = {"method": "PUT", "url": f"Observation?identifier={quote(EXTRACT_IDENTIFIER_SYSTEM + '|' + key, safe='')}"}
            entries.append({"fullUrl": f"urn:uuid:{new_id()}", "resource": observation, "request": request})
    if not any(e["resource"]["resourceType"] == "Observation" for e in entries):
        issues.append(Issue("information", "informational", "Nothing was marked for extraction or answered"))
    return Extraction({"resourceType": "Bundle", "type": "transaction", "entry": entries}, tuple(issues))


def _marked(index: QuestionnaireIndex, item: dict[str, Any]) -> bool:
    """observationExtract on the item (or its codes), else the nearest enclosing item, else the root."""
    for element in (item, *reversed(index.ancestors(item))):
        own = extension_value(element, OBSERVATION_EXTRACT)
        if isinstance(own, bool):
            return own
        if element is item and any(extension_value(code, OBSERVATION_EXTRACT) is True for code in item.get("code") or []):
            return True
    return extension_value(index.questionnaire, OBSERVATION_EXTRACT) is True


def _categories(index: QuestionnaireIndex, item: dict[str, Any]) -> list[Any]:
    for element in (item, *reversed(index.ancestors(item)), index.questionnaire):
        found = [e.get("valueCodeableConcept") for e in extensions(element, OBSERVATION_EXTRACT_CATEGORY) if e.get("valueCodeableConcept")]
        if found:
            return found
    return []


def _observation(
    index: QuestionnaireIndex, response: dict[str, Any], item: dict[str, Any], codes: list[Any], value: tuple[str, Any], derived_from: str | None
) -> dict[str, Any]:
    observation: dict[str, Any] = {"resourceType": "Observation", "status": "final"}
    categories = _categories(index, item)
    if categories:
        observation["category"] = categories
    observation["code"] = {"coding": codes}
    for element in ("subject", "encounter"):
        if isinstance(response.get(element), dict):
            observation[element] = response[element]
    if response.get("basedOn"):
        observation["basedOn"] = response["basedOn"]
    part_of = [r for r in response.get("partOf") or [] if not str(r.get("reference", "")).startswith(_NOT_PART_OF)]
    if part_of:
        observation["partOf"] = part_of
    authored = response.get("authored")
    if isinstance(authored, str):
        observation["effectiveDateTime"] = authored
        if _INSTANT.fullmatch(authored):
            observation["issued"] = authored
    author = response.get("author")
    if isinstance(author, dict) and not str(author.get("reference", "")).startswith(_NOT_PERFORMERS):
        observation["performer"] = [author]
    observation[f"value{value[0]}"] = value[1]
    if derived_from is not None:
        observation["derivedFrom"] = [{"reference": derived_from}]
    return observation


def _observation_value(item: dict[str, Any], answer: dict[str, Any]) -> tuple[str, Any] | None:
    """The answer as an Observation value[x] (a number with the item's unit becomes a Quantity)."""
    found = answer_value(answer)
    if found is None:
        return None
    kind, value = found
    unit = extension_value(item, UNIT)
    if kind in ("Integer", "Decimal") and (isinstance(unit, dict) or kind == "Decimal"):
        quantity: dict[str, Any] = {"value": value}
        if isinstance(unit, dict):
            quantity.update({k: unit[k] for k in ("system", "code") if k in unit})
            quantity["unit"] = unit.get("display") or unit.get("code")
        return "Quantity", quantity
    simple = {"Boolean": "Boolean", "Integer": "Integer", "String": "String", "Time": "Time", "DateTime": "DateTime",
              "Date": "DateTime", "Uri": "String", "Quantity": "Quantity"}
    if kind == "Coding":
        return "CodeableConcept", {"coding": [value]}
    return (simple[kind], value) if kind in simple else None


def _plain_coding(code: dict[str, Any]) -> dict[str, Any]:
    """The item code without the SDC 3 extraction flag on it."""
    extension = [e for e in code.get("extension") or [] if e.get("url") != OBSERVATION_EXTRACT]
    plain = {k: v for k, v in code.items() if k != "extension"}
    return {**plain, "extension": extension} if extension else plain


def _link_ids(node: ResponseNode) -> Iterator[str]:
    chain = [node, *node.ancestors()]
    for part in reversed(chain):
        yield quote(part.link_id, safe="")
