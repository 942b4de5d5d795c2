"""Which response items are enabled: enableWhen (with enableBehavior) and SDC enableWhenExpression.

Spec: https://hl7.org/fhir/R4/questionnaire-definitions.html#Questionnaire.item.enableWhen and
https://hl7.org/fhir/uv/sdc/behavior.html#enableWhenExpression. An item under a disabled item is
disabled; a disabled question counts as unanswered in other conditions. When several occurrences of
the question exist, the nearest one (sharing the deepest enclosing item) is used.
"""

from __future__ import annotations

from typing import Any

from app.fhir.fhirpath import FhirPathError
from app.fhir.outcome import Issue
from app.questionnaire.answers import answer_value, values_equal
from app.questionnaire.expressions import SdcEnvironment
from app.questionnaire.extensions import ENABLE_WHEN_EXPRESSION, expression_of
from app.questionnaire.tree import ResponseNode, walk

__all__ = ["Enablement"]

_NUMBERS = frozenset({"Integer", "Decimal"})
_ORDERED = _NUMBERS | {"Date", "DateTime", "Time", "String", "Quantity"}
_TEMPORAL = frozenset({"Date", "DateTime"})


class Enablement:
    """Enabled state of every node of one response; content problems found on the way (a
    condition that cannot be evaluated) are collected in `issues` and leave the item enabled,
    so that its rules still apply."""

    def __init__(self, environment: SdcEnvironment, nodes: list[ResponseNode]) -> None:
        self.environment = environment
        self.nodes = nodes
        self.issues: list[Issue] = []
        self._by_link_id: dict[str, list[ResponseNode]] = {}
        for node in walk(nodes):
            self._by_link_id.setdefault(node.link_id, []).append(node)
        self._state: dict[int, bool] = {}
        self._visiting: set[int] = set()

    def is_enabled(self, node: ResponseNode) -> bool:
        key = id(node)
        if key not in self._state:
            if key in self._visiting:
                self._problem(node, "its enableWhen conditions depend on themselves")
                return True
            self._visiting.add(key)
            try:
                parent_enabled = node.parent is None or self.is_enabled(node.parent)
                self._state[key] = parent_enabled and self._own_condition(node)
            finally:
                self._visiting.discard(key)
        return self._state[key]

    def _own_condition(self, node: ResponseNode) -> bool:
        definition = node.definition
        if definition is None:
            return True
        expression = expression_of(definition, ENABLE_WHEN_EXPRESSION)
        if expression is not None:
            try:
                result = self.environment.evaluate(expression, node, definition)
            except FhirPathError as error:
                self._problem(node, f"its enableWhenExpression cannot be evaluated: {error}")
                return True
            return result == [True]
        conditions = [c for c in definition.get("enableWhen") or [] if isinstance(c, dict)]
        if not conditions:
            return True
        results = [self._condition(node, condition) for condition in conditions]
        if definition.get("enableBehavior") == "any":
            return any(results)
        return all(results)

    def _condition(self, node: ResponseNode, condition: dict[str, Any]) -> bool:
        answers = self._answers(node, str(condition.get("question")))
        operator = condition.get("operator")
        expected = answer_value(condition)
        if expected is None:
            self._problem(node, f"an enableWhen on '{condition.get('question')}' has no answer[x]")
            return False
        kind, wanted = expected
        if operator == "exists":
            return bool(answers) == (wanted is True)
        values = [v for v in map(answer_value, answers) if v is not None]
        if operator == "=":
            return any(self._equal(node, kind, wanted, value) for value in values)
        if operator == "!=":
            # "no answer equals": an unanswered question enables nothing (as the SDC test form expects)
            return bool(values) and not any(self._equal(node, kind, wanted, value) for value in values)
        if operator in (">", "<", ">=", "<="):
            return any(self._compare(node, operator, kind, wanted, value) for value in values)
        self._problem(node, f"unknown enableWhen operator '{operator}'")
        return False

    def _answers(self, node: ResponseNode, link_id: str) -> list[Any]:
        """Answers of the nearest enabled occurrence(s) of question `link_id`."""
        candidates = self._by_link_id.get(link_id, [])
        if not candidates:
            return []
        lineage = [node, *node.ancestors()]

        def closeness(candidate: ResponseNode) -> int:
            theirs = {id(n) for n in (candidate, *candidate.ancestors())}
            return next((len(lineage) - i for i, n in enumerate(lineage) if id(n) in theirs), 0)

        best = max(map(closeness, candidates))
        nearest = [c for c in candidates if closeness(c) == best]
        return [a for c in nearest if self.is_enabled(c) for a in c.item.get("answer") or []]

    def _equal(self, node: ResponseNode, kind: str, wanted: Any, value: tuple[str, Any]) -> bool:
        if not _comparable(kind, value[0]):
            self._mismatch(node, kind, value[0])
            return False
        if kind in _TEMPORAL and value[0] in _TEMPORAL and (kind == "Date" or value[0] == "Date"):
            return str(wanted)[:10] == str(value[1])[:10]  # a date equals a dateTime on that day
        return values_equal(kind if kind not in _NUMBERS else "Decimal", value[1], wanted)

    def _compare(self, node: ResponseNode, operator: str, kind: str, wanted: Any, value: tuple[str, Any]) -> bool:
        if not _comparable(kind, value[0]) or kind not in _ORDERED:
            self._mismatch(node, kind, value[0])
            return False
        left, right = value[1], wanted
        if kind == "Quantity":
            if (left.get("code") or left.get("unit")) != (right.get("code") or right.get("unit")):
                return False
            left, right = left.get("value"), right.get("value")
        elif kind in _TEMPORAL:
            width = min(len(str(left)), len(str(right)))
            left, right = str(left)[:width], str(right)[:width]
        try:
            return bool({">": left > right, "<": left < right, ">=": left >= right, "<=": left <= right}[operator])
        except TypeError:
            self._mismatch(node, kind, value[0])
            return False

    def _mismatch(self, node: ResponseNode, expected: str, actual: str) -> None:
        self._problem(node, f"an enableWhen compares a {expected} with a {actual} answer, which never matches")

    def _problem(self, node: ResponseNode, message: str) -> None:
        issue = Issue("warning", "processing", f"Item '{node.link_id}': {message}", (node.path,))
        if issue not in self.issues:
            self.issues.append(issue)


def _comparable(expected: str, actual: str) -> bool:
    return expected == actual or (expected in _NUMBERS and actual in _NUMBERS) or (expected in _TEMPORAL and actual in _TEMPORAL)
