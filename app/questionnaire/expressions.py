"""The SDC expression environment: FHIRPath with `%resource`, `%context`, `%questionnaire`,
`%qitem`, launch contexts, `variable`s in scope, and `weight()` / `ordinal()`.

Spec: https://hl7.org/fhir/uv/sdc/expressions.html (variables and their scope, context
variables, "FHIRPath supplements" for weight()).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from app.fhir.fhirpath import FhirPathError, FhirPathFunction, evaluate, typed
from app.questionnaire.answers import values_equal
from app.questionnaire.extensions import (
    CODE_SYSTEM_PROPERTY_ITEM_WEIGHT,
    EXPANSION_PROPERTY,
    VARIABLE,
    WEIGHT_EXTENSIONS,
    extension_value,
    extensions,
)
from app.questionnaire.tree import QuestionnaireIndex, ResponseNode

__all__ = ["FHIRPATH", "X_FHIR_QUERY", "SdcEnvironment", "Terminology"]

FHIRPATH = "text/fhirpath"
X_FHIR_QUERY = "application/x-fhir-query"

Resource = dict[str, Any]


@dataclass(frozen=True)
class Terminology:
    """ValueSets and CodeSystems by canonical URL, as far as the caller knows them (the ones
    contained in the Questionnaire are always looked at first)."""

    value_sets: Mapping[str, Resource] = field(default_factory=dict)
    code_systems: Mapping[str, Resource] = field(default_factory=dict)


class SdcEnvironment:
    """Evaluates the expressions of one Questionnaire against one (working) response.

    Variables are computed once per node; make a new environment after changing the response.
    `launch` holds the launch contexts (`patient`, ...) and `prefetched` the results of
    x-fhir-query variables, both by name.
    """

    def __init__(
        self,
        index: QuestionnaireIndex,
        response: Resource,
        terminology: Terminology | None = None,
        launch: Mapping[str, Any] | None = None,
        prefetched: Mapping[str, Any] | None = None,
    ) -> None:
        self.index = index
        self.response = response
        self.terminology = terminology or Terminology()
        self.launch = dict(launch or {})
        self.prefetched = dict(prefetched or {})
        self._scopes: dict[tuple[int, int], Mapping[str, Any]] = {}
        self._owners: dict[int, Resource] | None = None
        weight = FhirPathFunction(self._weights, {0: ()})
        self.functions = {"weight": weight, "ordinal": weight}

    def evaluate(self, expression: Mapping[str, Any], node: ResponseNode | None, item: Resource | None, *, keep_types: bool = False) -> list[Any]:
        """The value of an Expression defined on Questionnaire `item` (None: the root), at the
        response `node` that instantiates it (None: the response root).

        Raises FhirPathError when it fails or is not FHIRPath.
        """
        if expression.get("language") != FHIRPATH or not isinstance(expression.get("expression"), str):
            raise FhirPathError(f"'{expression.get('language')}' expressions are not supported here, only {FHIRPATH}")
        variables = dict(self.variables(node, item))
        focus = variables["context"]
        return evaluate(expression["expression"], focus, variables, self.functions, keep_types=keep_types)

    def variables(self, node: ResponseNode | None, item: Resource | None) -> Mapping[str, Any]:
        """Every variable in scope for an expression on `item` at its instance `node`: the context
        variables, then the `variable`s of the root and of each enclosing item, outermost first."""
        key = (id(item), id(node))
        if key in self._scopes:
            return self._scopes[key]
        if item is None:
            root = {**self.launch, "resource": self.response, "questionnaire": self.index.questionnaire, "context": self.response}
            scope = self._add_variables(root, self.index.questionnaire)
        else:
            parent = self.index.parents.get(item.get("linkId", ""))
            outer = self.variables(node.parent if node is not None and parent is not None else None, parent)
            context = typed(node.item, "QuestionnaireResponse.item") if node is not None else self.response
            scope = self._add_variables({**outer, "context": context, "qitem": typed(item, "Questionnaire.item")}, item)
        self._scopes[key] = scope
        return scope

    def _add_variables(self, scope: dict[str, Any], element: Resource) -> dict[str, Any]:
        for extension in extensions(element, VARIABLE):
            expression = extension.get("valueExpression") or {}
            name = expression.get("name")
            if not isinstance(name, str):
                raise FhirPathError("a variable needs a name")
            if expression.get("language") == X_FHIR_QUERY:
                scope[name] = self.prefetched.get(name, [])
                continue
            if expression.get("language") != FHIRPATH:
                raise FhirPathError(f"variable '{name}': '{expression.get('language')}' is not supported")
            scope[name] = evaluate(str(expression.get("expression")), scope["context"], scope, self.functions, keep_types=True)
        return scope

    # weight() / ordinal(): https://hl7.org/fhir/uv/sdc/expressions.html#fhirpath-supplements

    def _weights(self, inputs: list[Any]) -> list[Decimal]:
        weights = []
        for value in inputs:
            weight = self._weight(value)
            if weight is not None:
                weights.append(weight)
        return weights

    def _weight(self, value: Any) -> Decimal | None:
        """The weight of an answer, answerOption or Coding: its own extension, then the answerOption
        of the item it answers, then that item's answer ValueSet, then the code's CodeSystem.
        Empty for values that are not coded; an error for a code no weight can be found for."""
        if not isinstance(value, dict):
            return None
        own = _weight_extension(value)
        if own is not None:
            return own
        coding = value.get("valueCoding") if "valueCoding" in value else value
        if not isinstance(coding, dict) or "code" not in coding:
            return None
        own = _weight_extension(coding)
        if own is not None:
            return own
        owner = self._owner_of(value) or self._owner_of(coding)
        weight = self._weight_from_item(owner, coding) if owner is not None else None
        if weight is None:
            weight = self._weight_from_code_system(coding)
        if weight is None:
            raise FhirPathError(f"weight(): no weight is defined for {coding.get('system', '')}|{coding.get('code')}")
        return weight

    def _owner_of(self, value: dict[str, Any]) -> Any:
        """The Questionnaire item a response value answers (found by identity: FHIRPath hands the
        very dicts of the response to functions), or None."""
        if self._owners is None:
            self._owners = {}
            self._add_owners(self._owners, dict.get(self.response, "item"))
        return self._owners.get(id(value))

    def _add_owners(self, owners: dict[int, Resource], items: Any) -> None:
        # plain dict reads: this bookkeeping must not count as reading the items (see scoring)
        for item in items if isinstance(items, list) else ():
            if not isinstance(item, dict):
                continue
            definition = self.index.items.get(str(dict.get(item, "linkId")))
            for answer in dict.get(item, "answer") or ():
                if isinstance(answer, dict) and definition is not None:
                    owners[id(answer)] = definition
                    coding = dict.get(answer, "valueCoding")
                    if isinstance(coding, dict):
                        owners[id(coding)] = definition
                    self._add_owners(owners, dict.get(answer, "item"))
            self._add_owners(owners, dict.get(item, "item"))

    def _weight_from_item(self, item: Resource, coding: dict[str, Any]) -> Decimal | None:
        for option in item.get("answerOption") or []:
            candidate = option.get("valueCoding") if isinstance(option, dict) else None
            if isinstance(candidate, dict) and values_equal("Coding", candidate, coding):
                found = _weight_extension(option)
                return found if found is not None else _weight_extension(candidate)
        value_set = self._value_set(item.get("answerValueSet"))
        return _weight_in_value_set(value_set, coding) if value_set is not None else None

    def _value_set(self, reference: Any) -> Resource | None:
        if not isinstance(reference, str):
            return None
        if reference.startswith("#"):
            return _contained(self.index.questionnaire, "ValueSet", lambda r: r.get("id") == reference[1:])
        return _contained(self.index.questionnaire, "ValueSet", lambda r: r.get("url") == reference) or self.terminology.value_sets.get(reference)

    def _weight_from_code_system(self, coding: dict[str, Any]) -> Decimal | None:
        system = coding.get("system")
        if not isinstance(system, str):
            return None
        code_system = (
            _contained(self.response, "CodeSystem", lambda r: r.get("url") == system)
            or _contained(self.index.questionnaire, "CodeSystem", lambda r: r.get("url") == system)
            or self.terminology.code_systems.get(system)
        )
        if code_system is None:
            return None
        concept = _concept(code_system.get("concept") or [], str(coding.get("code")))
        if concept is None:
            return None
        codes = {"itemWeight"} | {
            p.get("code") for p in code_system.get("property") or [] if isinstance(p, dict) and p.get("uri") == CODE_SYSTEM_PROPERTY_ITEM_WEIGHT
        }
        for prop in concept.get("property") or []:
            if isinstance(prop, dict) and prop.get("code") in codes:
                return _decimal(prop.get("valueDecimal", prop.get("valueInteger")))
        return _weight_extension(concept)


def _weight_extension(element: dict[str, Any]) -> Decimal | None:
    for url in WEIGHT_EXTENSIONS:
        value = extension_value(element, url)
        if value is not None:
            return _decimal(value)
    return None


def _weight_in_value_set(value_set: Resource, coding: dict[str, Any]) -> Decimal | None:
    for entry in (value_set.get("expansion") or {}).get("contains") or []:
        if isinstance(entry, dict) and values_equal("Coding", entry, coding):
            found = _weight_extension(entry)
            if found is not None:
                return found
            for prop in extensions(entry, EXPANSION_PROPERTY):
                if extension_value(prop, "code") == "itemWeight":
                    return _decimal(extension_value(prop, "value[x]"))
    for include in (value_set.get("compose") or {}).get("include") or []:
        if isinstance(include, dict) and include.get("system") in (None, coding.get("system")):
            concept = _concept(include.get("concept") or [], str(coding.get("code")))
            if concept is not None and _weight_extension(concept) is not None:
                return _weight_extension(concept)
    return None


def _concept(concepts: list[Any], code: str) -> dict[str, Any] | None:
    for concept in concepts:
        if isinstance(concept, dict):
            if concept.get("code") == code:
                return concept
            nested = _concept(concept.get("concept") or [], code)
            if nested is not None:
                return nested
    return None


def _contained(resource: Resource, resource_type: str, match: Any) -> Resource | None:
    for contained in resource.get("contained") or []:
        if isinstance(contained, dict) and contained.get("resourceType") == resource_type and match(contained):
            return contained
    return None


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        return None
    return Decimal(str(value))
