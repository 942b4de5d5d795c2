"""Calculated items: SDC calculatedExpression, evaluated until the response settles.

Spec: https://hl7.org/fhir/uv/sdc/expressions.html#calculatedExpression. A calculated item the
client left out is filled in; a client value that differs from the calculation stands only when
the item is not readOnly (the user overrode it), otherwise it is replaced and a warning says so.
Calculations may read each other and enablement may read calculations, so a further pass runs
whenever an expression or enableWhen read a calculated item before that item changed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.fhir.fhirpath import FhirPathError
from app.fhir.outcome import Issue
from app.questionnaire.answers import answers_from_values, same_answers
from app.questionnaire.enablement import Enablement
from app.questionnaire.expressions import SdcEnvironment, Terminology
from app.questionnaire.extensions import CALCULATED_EXPRESSION, expression_of
from app.questionnaire.tree import QuestionnaireIndex, containers, response_nodes, walk

__all__ = ["Calculated", "calculate"]


@dataclass(frozen=True)
class Calculated:
    """The response with its calculated items filled in, and the warnings on the way."""

    response: dict[str, Any]
    issues: tuple[Issue, ...]


def calculate(
    index: QuestionnaireIndex,
    response: dict[str, Any],
    terminology: Terminology | None = None,
    launch: Mapping[str, Any] | None = None,
) -> Calculated:
    """Fill the calculated items of (a copy of) `response` from their calculatedExpressions."""
    calculated = [item for item in index.in_document_order() if expression_of(item, CALCULATED_EXPRESSION)]
    if not calculated:
        return Calculated(_copy(response), ())
    reads = _ReadLog()
    working = _copy(response)
    client_answered, placeholders = _watch(index, working, calculated, reads)
    filled: set[int] = set()
    overridden: set[int] = set()
    issues: dict[str, Issue] = {}
    for _ in range(len(calculated) + 1):
        reads.start_pass()
        environment = SdcEnvironment(index, working, terminology, launch)
        nodes = response_nodes(index, working)
        enablement = Enablement(environment, nodes)
        for node in walk(nodes):
            item = node.definition
            expression = expression_of(item, CALCULATED_EXPRESSION) if item is not None else None
            if item is None or expression is None or id(node.item) in overridden:
                continue
            with reads.watching():
                enabled = enablement.is_enabled(node)
            current = dict.get(node.item, "answer") or []
            if not enabled:
                if id(node.item) in filled and current:
                    reads.changed(node.item)
                    dict.pop(node.item, "answer")
                continue
            try:
                with reads.watching():
                    answers = answers_from_values(item, environment.evaluate(expression, node, item))
            except (FhirPathError, ValueError) as error:
                issues[node.path] = Issue("warning", "processing", f"Item '{node.link_id}' cannot be calculated: {error}", (node.path,))
                continue
            if same_answers(current, answers):
                continue
            if id(node.item) in client_answered and id(node.item) not in filled:
                if not item.get("readOnly"):
                    overridden.add(id(node.item))  # the user's own value; SDC stops recalculating it
                    continue
                issues[node.path] = Issue(
                    "warning",
                    "business-rule",
                    f"Item '{node.link_id}' is calculated and read-only: the submitted value was replaced by the calculated one",
                    (node.path,),
                )
            reads.changed(node.item)
            if answers:
                dict.__setitem__(node.item, "answer", answers)
            else:
                dict.pop(node.item, "answer", None)
            filled.add(id(node.item))
        if not reads.stale():
            break
    else:
        issues["settle"] = Issue("warning", "processing", "The calculated items did not settle; their values may be incomplete")
    return Calculated(_plain(working, placeholders), tuple(issues.values()))


@dataclass
class _ReadLog:
    """When calculated items were read (while expressions run) and when they changed, in one pass."""

    active: bool = False
    tick: int = 0
    first_read: dict[int, int] = field(default_factory=dict)
    changed_at: dict[int, int] = field(default_factory=dict)

    def start_pass(self) -> None:
        self.tick = 0
        self.first_read.clear()
        self.changed_at.clear()

    def watching(self) -> _Watching:
        return _Watching(self)

    def read(self, item: dict[str, Any]) -> None:
        if self.active:
            self.first_read.setdefault(id(item), self.tick)

    def changed(self, item: dict[str, Any]) -> None:
        self.tick += 1
        self.changed_at[id(item)] = self.tick

    def stale(self) -> bool:
        """Whether something read a calculated item before its last change in this pass."""
        return any(self.first_read.get(key, self.tick + 1) < at for key, at in self.changed_at.items())


class _Watching:
    def __init__(self, log: _ReadLog) -> None:
        self.log = log

    def __enter__(self) -> None:
        self.log.active = True

    def __exit__(self, *_: object) -> None:
        self.log.active = False


_CONTENT = frozenset({"answer", "_answer", "item"})  # what a calculation changes; linkId and text never do


class _Watched(dict[str, Any]):
    """A calculated item of the working response that tells the log when its content is read
    (FHIRPath and the engine read items through these dict methods)."""

    log: _ReadLog

    def get(self, key: str, default: Any = None) -> Any:
        if key in _CONTENT:
            self.log.read(self)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        if key in _CONTENT:
            self.log.read(self)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if key in _CONTENT:
            self.log.read(self)
        return super().__contains__(key)

    def __iter__(self) -> Iterator[str]:
        self.log.read(self)
        return super().__iter__()

    def items(self) -> Any:
        self.log.read(self)
        return super().items()

    def values(self) -> Any:
        self.log.read(self)
        return super().values()

    def keys(self) -> Any:
        self.log.read(self)
        return super().keys()


def _watch(
    index: QuestionnaireIndex, response: dict[str, Any], calculated: list[dict[str, Any]], log: _ReadLog
) -> tuple[set[int], set[int]]:
    """Make every calculated item of `response` watched, inserting an empty one (in Questionnaire
    order) wherever one is missing so each calculation has its own `%context`. Returns the ids of
    the items the client answered and of the inserted ones."""
    answered: set[int] = set()
    inserted: set[int] = set()
    nodes = response_nodes(index, response)  # containers stay the same dicts while items are inserted
    for item in calculated:
        link_id = item["linkId"]
        for container in containers(index, response, nodes, item):
            siblings = container.setdefault("item", [])
            present = [i for i, s in enumerate(siblings) if isinstance(s, dict) and s.get("linkId") == link_id]
            if not present:
                position = index.positions.get(link_id, 0)
                at = next(
                    (i for i, s in enumerate(siblings) if isinstance(s, dict) and index.positions.get(str(s.get("linkId")), -1) > position),
                    len(siblings),
                )
                siblings.insert(at, {"linkId": link_id})
            for i in present or [at]:
                watched = _Watched(siblings[i])
                watched.log = log
                siblings[i] = watched
                if not present:
                    inserted.add(id(watched))
                elif dict.get(watched, "answer"):
                    answered.add(id(watched))
    return answered, inserted


def _plain(value: Any, placeholders: set[int]) -> Any:
    """A plain copy of the working response without the inserted items that stayed unanswered
    (nor an item list they leave empty)."""
    if isinstance(value, list):
        return [_plain(v, placeholders) for v in value if not (id(v) in placeholders and _empty(v))]
    if isinstance(value, dict):
        copied = {k: _plain(v, placeholders) for k, v in dict.items(value)}
        if copied.get("item") == []:
            del copied["item"]
        return copied
    return value


def _empty(item: Any) -> bool:
    return isinstance(item, dict) and not dict.get(item, "answer") and not dict.get(item, "item")


def _copy(value: Any) -> Any:
    """A deep copy of plain JSON (faster than copy.deepcopy), watched items made plain again."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in dict.items(value)}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
