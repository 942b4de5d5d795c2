"""Validating a QuestionnaireResponse against its Questionnaire.

Spec: https://hl7.org/fhir/R4/questionnaireresponse.html (qrs-1, qrs-2, "the response must match
the Questionnaire"), https://hl7.org/fhir/uv/sdc/behavior.html (value constraints) and SDC 4.0's
rule that a response item's text, if present, matches the Questionnaire's (or a translation of it).
Checked: structure and linkIds, order, enabled items only, required, repeats, answer types,
answerOption / answer ValueSet membership, minValue/maxValue, minLength/maxLength, regex and
maxDecimalPlaces. One issue per offending item, located by a FHIRPath that names its linkId.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from app.fhir.outcome import Issue
from app.questionnaire.answers import ANSWER_TYPES, answer_value, values_equal
from app.questionnaire.enablement import Enablement
from app.questionnaire.expressions import Terminology
from app.questionnaire.extensions import (
    MAX_DECIMAL_PLACES,
    MAX_VALUE,
    MIN_LENGTH,
    MIN_VALUE,
    REGEX,
    extension_value,
    extensions,
    translations,
)
from app.questionnaire.tree import QuestionnaireIndex, ResponseNode

__all__ = ["validate_response"]

_ORDERED = frozenset({"Integer", "Decimal", "Date", "DateTime", "Time", "Quantity"})


def validate_response(
    index: QuestionnaireIndex,
    response: dict[str, Any],
    nodes: list[ResponseNode],
    enablement: Enablement,
    terminology: Terminology | None = None,
    *,
    complete: bool,
) -> list[Issue]:
    """The problems of `response` (whose `nodes` and `enablement` the caller built), one issue per
    item: errors when `complete` (a completed or amended response), warnings otherwise, and only a
    complete response must answer its required items."""
    checker = _Checker(index, response, enablement, terminology or Terminology(), complete)
    checker.level("QuestionnaireResponse", None, None, nodes)
    severity = "error" if complete else "warning"
    return [
        Issue(severity, problems[0][0], f"Item '{link_id}': " + "; ".join(message for _, message in problems), (path,))
        for path, (link_id, problems) in checker.problems.items()
    ]


class _Checker:
    def __init__(self, index: QuestionnaireIndex, response: dict[str, Any], enablement: Enablement, terminology: Terminology, complete: bool) -> None:
        self.index = index
        self.language = response.get("language")
        self.enablement = enablement
        self.terminology = terminology
        self.complete = complete
        self.problems: dict[str, tuple[str, list[tuple[str, str]]]] = {}

    def add(self, path: str, link_id: str, code: str, message: str) -> None:
        self.problems.setdefault(path, (link_id, []))[1].append((code, message))

    def level(self, base: str, parent: dict[str, Any] | None, parent_node: ResponseNode | None, nodes: list[ResponseNode]) -> None:
        """Check the items in one list (the response root, a group instance or one answer)."""
        allowed = {child["linkId"]: child for child in self.index.children(parent) if isinstance(child.get("linkId"), str)}
        furthest = -1
        counts: dict[str, int] = {}
        for node in nodes:
            definition = allowed.get(node.link_id)
            if definition is None:
                if node.definition is None:
                    self.add(node.path, node.link_id, "structure", "is not an item of the Questionnaire")
                else:
                    home = self.index.parents.get(node.link_id)
                    where = f"inside '{home.get('linkId')}'" if home else "at the top level"
                    self.add(node.path, node.link_id, "structure", f"is in the wrong place: the Questionnaire has it {where}")
                continue
            position = self.index.positions[node.link_id]
            if position < furthest:
                self.add(node.path, node.link_id, "structure", "is out of the Questionnaire's order")
            furthest = max(furthest, position)
            counts[node.link_id] = counts.get(node.link_id, 0) + 1
            if counts[node.link_id] == 2:
                if definition.get("type") != "group":
                    self.add(node.path, node.link_id, "structure", "appears twice: all answers to a question go in one item (qrs-2)")
                elif not definition.get("repeats"):
                    self.add(node.path, node.link_id, "structure", "is a group that does not repeat but appears more than once")
            self.item(node, definition)
        if self.complete:
            self.required(base, parent_node, allowed, nodes)

    def required(self, base: str, parent_node: ResponseNode | None, allowed: dict[str, dict[str, Any]], nodes: list[ResponseNode]) -> None:
        for link_id, definition in allowed.items():
            if not definition.get("required") or definition.get("type") == "display":
                continue
            present = [n for n in nodes if n.link_id == link_id]
            if any(_has_content(n) for n in present):
                continue
            probe = present[0] if present else ResponseNode({"linkId": link_id}, definition, parent_node, f"{base}.item.where(linkId='{link_id}')", None)
            if self.enablement.is_enabled(probe):
                what = "needs at least one answered item" if definition.get("type") == "group" else "is required but has no answer"
                self.add(probe.path, link_id, "required", what)

    def item(self, node: ResponseNode, definition: dict[str, Any]) -> None:
        kind = definition.get("type")
        answers = [a for a in node.item.get("answer") or [] if isinstance(a, dict)]
        if not self.enablement.is_enabled(node):
            if _has_content(node):
                self.add(node.path, node.link_id, "business-rule", "is answered but not enabled (its enableWhen conditions are not met)")
            return
        self.text(node, definition)
        if answers and node.item.get("item"):
            self.add(node.path, node.link_id, "structure", "has both answers and items directly beneath it (qrs-1)")
        if kind in ("group", "display"):
            if answers:
                self.add(node.path, node.link_id, "structure", f"is a {kind} item and cannot have answers")
            if kind == "group":
                self.level(node.path, definition, node, [c for c in node.children if c.in_answer is None])
            return
        if len(answers) > 1 and not definition.get("repeats"):
            self.add(node.path, node.link_id, "structure", f"does not repeat but has {len(answers)} answers")
        for position, answer in enumerate(answers):
            self.answer(node, definition, position, answer)
            nested = [c for c in node.children if c.in_answer == position]
            if nested:
                self.level(f"{node.path}.answer[{position}]", definition, node, nested)
        if any(c.in_answer is None for c in node.children):
            self.add(node.path, node.link_id, "structure", "is a question: the items beneath it belong inside its answers")

    def text(self, node: ResponseNode, definition: dict[str, Any]) -> None:
        given = node.item.get("text")
        if given is None or "text" not in definition:
            return
        known = translations(definition, "text")
        accepted = {definition["text"], *([known[self.language]] if self.language in known else known.values())}
        if given not in accepted:
            self.add(node.path, node.link_id, "value", "has a text that differs from the Questionnaire's")

    def answer(self, node: ResponseNode, definition: dict[str, Any], position: int, answer: dict[str, Any]) -> None:
        found = answer_value(answer)
        kind = str(definition.get("type"))
        label = f"answer {position + 1}"
        if found is None:
            self.add(node.path, node.link_id, "required", f"{label} has no value")
            return
        value_type, value = found
        options = [o for o in (answer_value(option) for option in definition.get("answerOption") or []) if o is not None]
        accepted = ANSWER_TYPES.get(kind, frozenset()) | ({t for t, _ in options} if kind == "choice" else set())
        if value_type not in accepted:
            wanted = " or ".join(sorted(f"value{t}" for t in accepted)) or "no answer"
            self.add(node.path, node.link_id, "value", f"{label} is a value{value_type}, but a {kind} item takes {wanted}")
            return
        if options and (kind == "choice" or value_type == "Coding"):
            if not any(t == value_type and values_equal(t, v, value) for t, v in options):
                self.add(node.path, node.link_id, "code-invalid", f"{label} ({_shown(value_type, value)}) is not one of the item's answerOptions")
        elif value_type == "Coding" and definition.get("answerValueSet"):
            members = self.value_set_members(str(definition["answerValueSet"]))
            if members is not None and (value.get("system"), value.get("code")) not in members and (None, value.get("code")) not in members:
                self.add(node.path, node.link_id, "code-invalid", f"{label} ({_shown(value_type, value)}) is not in {definition['answerValueSet']}")
        for message in self.constraints(definition, value_type, value):
            self.add(node.path, node.link_id, "value", f"{label} {message}")

    def constraints(self, definition: dict[str, Any], value_type: str, value: Any) -> Iterator[str]:
        if value_type in ("String", "Uri") and isinstance(value, str):
            limit = definition.get("maxLength")
            if isinstance(limit, int) and len(value) > limit:
                yield f"is {len(value)} characters long, more than maxLength {limit}"
            minimum = extension_value(definition, MIN_LENGTH)
            if isinstance(minimum, int) and len(value) < minimum:
                yield f"is {len(value)} characters long, less than minLength {minimum}"
            pattern = extension_value(definition, REGEX)
            if isinstance(pattern, str):
                try:
                    if re.fullmatch(pattern, value) is None:
                        yield f"does not match the pattern {pattern}"
                except re.error:
                    pass  # a broken pattern in the content cannot be held against the answer
        if value_type in _ORDERED:
            for url, word, wrong_side in ((MIN_VALUE, "below minValue", -1), (MAX_VALUE, "above maxValue", 1)):
                bound = answer_value(next(extensions(definition, url), None))
                if bound is not None and _compare(value_type, value, bound[1]) == wrong_side:
                    yield f"({_shown(value_type, value)}) is {word} {_shown(bound[0], bound[1])}"
        if value_type == "Decimal":
            places = extension_value(definition, MAX_DECIMAL_PLACES)
            exponent = Decimal(str(value)).as_tuple().exponent
            if isinstance(places, int) and isinstance(exponent, int) and -exponent > places:
                yield f"has more than {places} decimal places"

    def value_set_members(self, reference: str) -> set[tuple[str | None, str | None]] | None:
        """(system, code) of every member of the answer ValueSet, or None when it cannot be told."""
        if reference.startswith("#"):
            value_set = next((c for c in self.index.questionnaire.get("contained") or [] if c.get("id") == reference[1:]), None)
        else:
            value_set = self.terminology.value_sets.get(reference)
        if not isinstance(value_set, dict):
            return None
        members: set[tuple[str | None, str | None]] = set()
        expansion = (value_set.get("expansion") or {}).get("contains")
        if expansion:
            members.update((c.get("system"), c.get("code")) for c in _flatten(expansion))
            return members
        for include in (value_set.get("compose") or {}).get("include") or []:
            system = include.get("system")
            concepts = include.get("concept")
            if concepts is None:
                code_system = self.terminology.code_systems.get(system or "")
                if code_system is None or include.get("filter") or include.get("valueSet"):
                    return None  # a whole system or a filter we cannot enumerate
                concepts = list(_flatten(code_system.get("concept") or []))
            members.update((system, c.get("code")) for c in concepts)
        return members


def _has_content(node: ResponseNode) -> bool:
    return bool(node.item.get("answer")) or any(_has_content(child) for child in node.children)


def _flatten(concepts: list[Any]) -> Iterator[dict[str, Any]]:
    for concept in concepts:
        if isinstance(concept, dict):
            yield concept
            yield from _flatten(concept.get("contains") or concept.get("concept") or [])


def _compare(value_type: str, value: Any, bound: Any) -> int | None:
    """-1, 0 or 1 comparing an answer with a min/max bound; None when they cannot be compared."""
    if value_type == "Quantity":
        if not isinstance(bound, dict) or (bound.get("code") or bound.get("unit")) != (value.get("code") or value.get("unit")):
            return None
        value, bound = value.get("value"), bound.get("value")
    if isinstance(value, str) and isinstance(bound, str):
        width = min(len(value), len(bound))
        value, bound = value[:width], bound[:width]
    try:
        return int(value > bound) - int(value < bound)
    except TypeError:
        return None


def _shown(value_type: str, value: Any) -> str:
    if value_type == "Coding" and isinstance(value, dict):
        return f"{value.get('system', '')}|{value.get('code', '')}"
    if value_type == "Quantity" and isinstance(value, dict):
        return f"{value.get('value')} {value.get('unit') or value.get('code') or ''}".strip()
    return str(value)
