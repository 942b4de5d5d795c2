"""$populate: a new response prefilled from the launch context and earlier data.

Spec: https://hl7.org/fhir/uv/sdc/populate.html (expression-based population). The Questionnaire
declares its launch contexts (`launchContext`, e.g. `patient`) and may declare root `variable`s
that are FHIR queries (`application/x-fhir-query`, with `{{FHIRPath}}` placeholders); the service
runs those queries (`population_queries`) and hands back their Bundles; each item's
`initialExpression` (or its static `initial`) gives its first answers; calculated items follow.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from app.fhir.fhirpath import FhirPathError, evaluate, json_value
from app.fhir.outcome import Issue
from app.questionnaire.answers import answers_from_values
from app.questionnaire.expressions import X_FHIR_QUERY, SdcEnvironment, Terminology
from app.questionnaire.extensions import (
    INITIAL_EXPRESSION,
    LAUNCH_CONTEXT,
    VARIABLE,
    expression_of,
    extension_value,
    extensions,
)
from app.questionnaire.scoring import calculate
from app.questionnaire.tree import QuestionnaireIndex, response_nodes, walk

__all__ = ["PopulationQuery", "launch_context_names", "populate_response", "population_queries"]

_PLACEHOLDER = re.compile(r"\{\{(.+?)\}\}")


@dataclass(frozen=True)
class PopulationQuery:
    """A search the service runs for an x-fhir-query variable `name`."""

    name: str
    resource_type: str
    params: tuple[tuple[str, str], ...]


def launch_context_names(questionnaire: dict[str, Any]) -> dict[str, str]:
    """name → resource type of each launchContext the Questionnaire declares."""
    names: dict[str, str] = {}
    for extension in extensions(questionnaire, LAUNCH_CONTEXT):
        name = extension_value(extension, "name")
        code = name.get("code") if isinstance(name, dict) else name
        if isinstance(code, str):
            names[code] = str(extension_value(extension, "type") or "")
    return names


def population_queries(questionnaire: dict[str, Any], launch: Mapping[str, Any]) -> tuple[list[PopulationQuery], list[Issue]]:
    """The root x-fhir-query variables with their `{{...}}` filled in from the launch contexts."""
    queries: list[PopulationQuery] = []
    issues: list[Issue] = []
    for extension in extensions(questionnaire, VARIABLE):
        expression = extension.get("valueExpression") or {}
        if expression.get("language") != X_FHIR_QUERY or not isinstance(expression.get("expression"), str):
            continue
        name = str(expression.get("name"))
        try:
            url = _PLACEHOLDER.sub(lambda m: _text(m.group(1), launch), expression["expression"])
        except (FhirPathError, LookupError) as error:
            issues.append(Issue("warning", "processing", f"Variable '{name}' cannot be filled in: {error}"))
            continue
        path, _, query = url.partition("?")
        queries.append(PopulationQuery(name, path.strip("/"), tuple(parse_qsl(query, keep_blank_values=True))))
    return queries, issues


def populate_response(
    questionnaire: dict[str, Any],
    *,
    subject: dict[str, Any] | None,
    launch: Mapping[str, Any],
    prefetched: Mapping[str, Any],
    authored: str,
    terminology: Terminology | None = None,
) -> tuple[dict[str, Any], list[Issue]]:
    """An `in-progress` response for `questionnaire` with every item present and the answers the
    initialExpressions (or static initial values) give; calculated items are filled in last."""
    issues = [
        Issue("warning", "incomplete", f"The launch context '{name}' ({kind}) was not given; items that need it stay empty")
        for name, kind in launch_context_names(questionnaire).items()
        if name not in launch
    ]
    canonical = questionnaire.get("url") or f"Questionnaire/{questionnaire.get('id')}"
    if questionnaire.get("version") and questionnaire.get("url"):
        canonical += f"|{questionnaire['version']}"
    response: dict[str, Any] = {"resourceType": "QuestionnaireResponse", "questionnaire": canonical, "status": "in-progress"}
    if subject is not None:
        response["subject"] = subject
    response["authored"] = authored
    index = QuestionnaireIndex.of(questionnaire)
    items = _skeleton(index, None)
    if items:
        response["item"] = items
    environment = SdcEnvironment(index, response, terminology, launch, prefetched)
    for node in walk(response_nodes(index, response)):
        definition = node.definition
        if definition is None:
            continue
        expression = expression_of(definition, INITIAL_EXPRESSION)
        try:
            if expression is not None:
                answers = answers_from_values(definition, environment.evaluate(expression, node, definition))
            else:
                answers = [{k: v for k, v in initial.items() if k.startswith("value")} for initial in definition.get("initial") or []]
                answers += [{k: v for k, v in o.items() if k.startswith("value")} for o in definition.get("answerOption") or [] if o.get("initialSelected")]
        except (FhirPathError, ValueError) as error:
            issues.append(Issue("warning", "processing", f"Item '{node.link_id}' cannot be prefilled: {error}", (node.path,)))
            continue
        if answers:
            node.item["answer"] = answers if definition.get("repeats") else answers[:1]
    calculated = calculate(index, response, terminology, launch)
    return calculated.response, [*issues, *calculated.issues]


def _skeleton(index: QuestionnaireIndex, parent: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One response item per Questionnaire item (groups once), without answers."""
    items = []
    for child in index.children(parent):
        if child.get("type") == "display" or not isinstance(child.get("linkId"), str):
            continue
        item: dict[str, Any] = {"linkId": child["linkId"]}
        if child.get("type") == "group":
            nested = _skeleton(index, child)
            if nested:
                item["item"] = nested
        items.append(item)
    return items


def _text(expression: str, launch: Mapping[str, Any]) -> str:
    """The single value of a `{{...}}` placeholder, as query text."""
    values = [json_value(v) for v in evaluate(expression.strip(), {}, dict(launch))]
    if len(values) != 1:
        raise LookupError(f"'{expression}' gives {len(values)} values, not one")
    return str(values[0]).lower() if isinstance(values[0], bool) else str(values[0])
