"""The two trees the engine walks: a Questionnaire's items by linkId, and a response's items
paired with their definitions.

Spec: https://hl7.org/fhir/R4/questionnaire.html, https://hl7.org/fhir/R4/questionnaireresponse.html
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["QuestionnaireIndex", "ResponseNode", "containers", "response_nodes", "walk"]

Item = dict[str, Any]


@dataclass(frozen=True)
class QuestionnaireIndex:
    """A Questionnaire with its items by linkId (linkIds are unique in a Questionnaire)."""

    questionnaire: dict[str, Any]
    items: dict[str, Item]
    parents: dict[str, Item | None]
    positions: dict[str, int]  # linkId → position among its siblings

    @classmethod
    def of(cls, questionnaire: dict[str, Any]) -> QuestionnaireIndex:
        items: dict[str, Item] = {}
        parents: dict[str, Item | None] = {}
        positions: dict[str, int] = {}

        def visit(children: list[Any], parent: Item | None) -> None:
            for position, item in enumerate(children):
                if isinstance(item, dict) and isinstance(item.get("linkId"), str):
                    items.setdefault(item["linkId"], item)
                    parents.setdefault(item["linkId"], parent)
                    positions.setdefault(item["linkId"], position)
                    visit(item.get("item") or [], item)

        visit(questionnaire.get("item") or [], None)
        return cls(questionnaire, items, parents, positions)

    def children(self, item: Item | None) -> list[Item]:
        source = self.questionnaire if item is None else item
        return [child for child in source.get("item") or [] if isinstance(child, dict)]

    def ancestors(self, item: Item) -> list[Item]:
        """The items above `item`, outermost first."""
        chain: list[Item] = []
        parent = self.parents.get(item.get("linkId", ""))
        while parent is not None:
            chain.insert(0, parent)
            parent = self.parents.get(parent.get("linkId", ""))
        return chain

    def in_document_order(self) -> list[Item]:
        order: list[Item] = []

        def visit(children: list[Item]) -> None:
            for child in children:
                order.append(child)
                visit(self.children(child))

        visit(self.children(None))
        return order


@dataclass(eq=False)
class ResponseNode:
    """One response item, its definition (None when the linkId is not in the Questionnaire),
    where it sits, and a FHIRPath to it that names its linkId (used in OperationOutcomes)."""

    item: Item
    definition: Item | None
    parent: ResponseNode | None
    path: str
    in_answer: int | None  # index of the parent's answer it is nested in; None: in the parent's item list
    children: list[ResponseNode] = field(default_factory=list)

    @property
    def link_id(self) -> str:
        return str(self.item.get("linkId", ""))

    def ancestors(self) -> Iterator[ResponseNode]:
        """The nodes above this one, nearest first."""
        node = self.parent
        while node is not None:
            yield node
            node = node.parent


def response_nodes(index: QuestionnaireIndex, response: dict[str, Any]) -> list[ResponseNode]:
    """The top-level nodes of `response`, each with its subtree."""
    return _nodes(index, response.get("item"), None, "QuestionnaireResponse", None)


def _nodes(index: QuestionnaireIndex, items: Any, parent: ResponseNode | None, base: str, in_answer: int | None) -> list[ResponseNode]:
    if not isinstance(items, list):
        return []
    counts: dict[str, int] = {}
    for item in items:
        if isinstance(item, dict):
            counts[str(item.get("linkId"))] = counts.get(str(item.get("linkId")), 0) + 1
    seen: dict[str, int] = {}
    nodes = []
    for item in items:
        if not isinstance(item, dict):
            continue
        link_id = str(item.get("linkId"))
        path = f"{base}.item.where(linkId='{_quoted(link_id)}')"
        if counts[link_id] > 1:
            path += f"[{seen.get(link_id, 0)}]"
        seen[link_id] = seen.get(link_id, 0) + 1
        node = ResponseNode(item, index.items.get(link_id), parent, path, in_answer)
        node.children = _nodes(index, item.get("item"), node, path, None)
        for position, answer in enumerate(item.get("answer") or []):
            if isinstance(answer, dict):
                node.children += _nodes(index, answer.get("item"), node, f"{path}.answer[{position}]", position)
        nodes.append(node)
    return nodes


def walk(nodes: list[ResponseNode]) -> Iterator[ResponseNode]:
    """Every node of the forest, depth first, in document order."""
    for node in nodes:
        yield node
        yield from walk(node.children)


def containers(index: QuestionnaireIndex, response: dict[str, Any], nodes: list[ResponseNode], item: Item) -> list[dict[str, Any]]:
    """The response elements whose `item` list holds instances of `item`: the response itself for
    a top-level item, each instance of a parent group, or each answer of a parent question."""
    parent = index.parents.get(item.get("linkId", ""))
    if parent is None:
        return [response]
    found: list[dict[str, Any]] = []
    for node in walk(nodes):
        if node.definition is parent:
            if parent.get("type") == "group":
                found.append(node.item)
            else:
                found.extend(a for a in node.item.get("answer") or [] if isinstance(a, dict))
    return found


def _quoted(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")
