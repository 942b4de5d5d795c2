"""The FHIRPath environment of `$apply`: named inputs, the injected clock, three-valued conditions.

Spec: https://hl7.org/fhir/R4/plandefinition.html#12.18.3.3 (conditions, dynamicValue) and the
`variable` extension (https://hl7.org/fhir/extensions/StructureDefinition-variable.html).

A missing fact is an empty collection, never `false`: a condition that evaluates to empty is
*undecided*, and the environment can say which of the facts it read were unknown (following the
named variables through the `variable` extensions that defined them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from app.fhir.fhirpath import FhirPathError, FhirPathFunction, evaluate

__all__ = ["VARIABLE_EXTENSION", "Decision", "Environment", "referenced_names", "split_terms", "to_json_value"]

VARIABLE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/variable"

# `%name` or `%`delimited name``; string literals are removed first so '50%' is not a variable.
_VARIABLE = re.compile(r"%(?:`([^`]+)`|([A-Za-z_][A-Za-z0-9_]*))")
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'")
_BUILT_IN = frozenset({"context", "resource", "ucum", "sct", "loinc"})


@dataclass(frozen=True)
class Decision:
    """The outcome of an applicability condition: True, False, or None (undecided), with the
    unknown facts that left it undecided and the problem when it could not be evaluated."""

    applies: bool | None
    unknown: frozenset[str] = frozenset()
    problem: str | None = None


@dataclass(frozen=True)
class Environment:
    """Everything an expression may read: `%name` inputs and the clock behind today()/now().

    `derived` maps each variable defined by a `variable` extension to its expression, so an
    unknown derived value can be traced back to the facts that were missing.
    """

    inputs: Mapping[str, Any]
    today: date
    now: datetime
    derived: Mapping[str, str] = field(default_factory=dict)

    def bind(self, **values: Any) -> Environment:
        """The same environment with some inputs replaced (e.g. `context` for a definition)."""
        return Environment({**self.inputs, **values}, self.today, self.now, self.derived)

    def with_variables(self, holder: Mapping[str, Any], focus: Any) -> tuple[Environment, list[str]]:
        """Evaluate the `variable` extensions of `holder` in order; each sees the ones before it.

        Returns the extended environment and the problems met (a failing variable is empty).
        """
        env = self
        problems: list[str] = []
        for extension in holder.get("extension") or []:
            if extension.get("url") != VARIABLE_EXTENSION:
                continue
            expression = extension.get("valueExpression") or {}
            name, text = expression.get("name"), expression.get("expression")
            if not isinstance(name, str) or not isinstance(text, str):
                problems.append("a variable extension needs valueExpression.name and .expression")
                continue
            if expression.get("language", "text/fhirpath") != "text/fhirpath":
                problems.append(f"variable '{name}': only text/fhirpath expressions are supported")
                value: list[Any] = []
            else:
                try:
                    value = env.evaluate(text, focus)
                except FhirPathError as error:
                    problems.append(f"variable '{name}': {error}")
                    value = []
            env = Environment({**env.inputs, name: value}, env.today, env.now, {**env.derived, name: text})
        return env, problems

    def evaluate(self, expression: str, focus: Any, resource: Any = None) -> list[Any]:
        """Evaluate on `focus` (also `%context`); `%resource` is the resource being built, if any."""
        variables = dict(self.inputs)
        variables.setdefault("context", focus)
        variables["resource"] = resource if resource is not None else variables["context"]
        return evaluate(expression, focus, variables, self._clock_functions())

    def condition(self, expression: str, focus: Any) -> Decision:
        """Applicability: only a single `true` applies; empty is undecided; anything else is a
        problem (and, like an error, leaves the action undecided rather than silently false)."""
        try:
            result = self.evaluate(expression, focus)
        except FhirPathError as error:
            return Decision(None, problem=str(error))
        if result == [True]:
            return Decision(True)
        if result == [False]:
            return Decision(False)
        if not result:
            return Decision(None, self.unknown_facts(expression, focus))
        return Decision(None, problem=f"condition '{expression}' gave {result!r}, not a single Boolean")

    def unknown_facts(self, expression: str, focus: Any, seen: frozenset[str] = frozenset()) -> frozenset[str]:
        """The empty inputs that leave this (empty) expression undecided.

        For `a or b or c` and `a and b` only the terms that are themselves empty are to blame (a
        false term of an `or`, or a true one of an `and`, cannot change the outcome); a derived
        variable is followed into the expression that defined it.
        """
        terms = split_terms(expression)
        if len(terms) > 1:
            blamed: set[str] = set()
            for term in terms:
                try:
                    empty = not self.evaluate(term, focus)
                except FhirPathError:
                    empty = True
                if empty:
                    blamed |= self.unknown_facts(term, focus, seen)
            return frozenset(blamed)
        unknown: set[str] = set()
        for name in referenced_names(expression) - seen:
            if name in self.derived:
                if _is_empty(self.inputs.get(name)):
                    unknown |= self.unknown_facts(self.derived[name], focus, seen | {name})
            elif name in self.inputs and _is_empty(self.inputs[name]):
                unknown.add(name)
        return frozenset(unknown)

    def _clock_functions(self) -> dict[str, FhirPathFunction]:
        today, now = self.today.isoformat(), _instant(self.now)
        return {
            "today": FhirPathFunction(lambda _data: [today], {0: ()}),
            "now": FhirPathFunction(lambda _data: [now], {0: ()}),
        }


def split_terms(expression: str) -> list[str]:
    """The top-level terms of an `or` chain, else of an `and` chain, else the expression itself
    (outer parentheses removed). Strings, delimited names and brackets are respected."""
    text = expression.strip()
    while text.startswith("(") and _closing(text, 0) == len(text) - 1:
        text = text[1:-1].strip()
    for operator in (" or ", " and "):
        parts = _split_top_level(text, operator)
        if len(parts) > 1:
            return parts
    return [text]


def _split_top_level(text: str, operator: str) -> list[str]:
    parts, depth, start, index, quote = [], 0, 0, 0, ""
    while index < len(text):
        char = text[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = ""
        elif char in "'`":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0 and text.startswith(operator, index):
            parts.append(text[start:index].strip())
            index += len(operator)
            start = index
            continue
        index += 1
    parts.append(text[start:].strip())
    return parts


def _closing(text: str, opening: int) -> int:
    """Index of the parenthesis closing the one at `opening` (-1 if none)."""
    depth, quote = 0, ""
    for index in range(opening, len(text)):
        char = text[index]
        if quote:
            if char == quote:
                quote = ""
        elif char in "'`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index
    return -1


def referenced_names(expression: str) -> frozenset[str]:
    """The `%name`s an expression reads, built-ins excluded."""
    text = _STRING.sub("''", expression)
    names = {quoted or plain for quoted, plain in _VARIABLE.findall(text)}
    return frozenset(names - _BUILT_IN)


def to_json_value(value: Any) -> Any:
    """A FHIRPath result item as JSON: decimals become numbers, quantities Quantity objects."""
    if isinstance(value, bool | int | str | dict | list) or value is None:
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
    if isinstance(value, float):
        return value
    data = getattr(value, "data", None)  # fhirpathpy's ResourceNode wraps JSON
    if isinstance(data, dict | list | str | int | float | bool):
        return data
    if type(value).__name__ == "FP_Quantity":
        quantity: dict[str, Any] = {"value": to_json_value(value.value)}
        unit = str(value.unit).strip("'")
        quantity["unit"] = unit
        return quantity
    return str(value)


def _is_empty(value: Any) -> bool:
    return value is None or value == []


def _instant(moment: datetime) -> str:
    text = moment.isoformat(timespec="milliseconds")
    return text if moment.tzinfo is not None else text + "Z"
