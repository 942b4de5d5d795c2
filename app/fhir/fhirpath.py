"""The one way BackPath evaluates FHIRPath: fhirpathpy over the R4 model, parsed once per text.

Callers pass the environment variables (`%resource`, `%context`, `%subject`, named inputs, ...)
and, where a use case needs them, extra functions such as SDC's `weight()`; both are per call, so
one parsed expression serves every questionnaire, plan and search parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fhirpathpy import apply_parsed_path
from fhirpathpy import compile as compile_fhirpath
from fhirpathpy.engine.nodes import FP_Quantity, FP_Type, ResourceNode
from fhirpathpy.models import models
from fhirpathpy.parser import parse

__all__ = [
    "FhirPathError",
    "FhirPathFunction",
    "compile_expression",
    "evaluate",
    "json_value",
    "parse_expression",
    "typed",
]

_R4 = models["r4"]

Compiled = Callable[..., list[Any]]


class FhirPathError(ValueError):
    """An expression that does not parse or cannot be evaluated."""


@dataclass(frozen=True)
class FhirPathFunction:
    """An extra function for expressions: `call(inputs, *arguments)` returns the output collection.

    `arity` maps each accepted argument count to fhirpathpy's parameter types, e.g.
    `{0: (), 1: ("Expr",)}`.
    """

    call: Callable[..., Any]
    arity: Mapping[int, tuple[str, ...]]


@lru_cache(maxsize=4096)
def compile_expression(expression: str) -> Compiled:
    """Compile `expression` once; raise FhirPathError when it does not parse."""
    try:
        return compile_fhirpath(expression, _R4)
    except Exception as error:  # fhirpathpy raises bare Exceptions from its ANTLR parser
        raise FhirPathError(f"Cannot parse FHIRPath '{expression}': {error}") from None


@lru_cache(maxsize=8192)
def parse_expression(expression: str) -> Any:
    """The parse tree of `expression`, cached; raise FhirPathError when it does not parse."""
    try:
        return parse(expression)  # type: ignore[no-untyped-call]
    except Exception as error:  # fhirpathpy raises bare Exceptions from its ANTLR parser
        raise FhirPathError(f"Cannot parse FHIRPath '{expression}': {error}") from None


def typed(data: Any, type_path: str) -> Any:
    """`data` marked as the element at `type_path` (e.g. "QuestionnaireResponse.item").

    A plain dict only knows its type when it has a `resourceType`; marked, it can be the input,
    `%context` or a variable of an expression that resolves choice types (`answer.value`).
    """
    return ResourceNode.create_node(data, type_path)  # type: ignore[no-untyped-call]


def json_value(value: Any) -> Any:
    """A result value as JSON-ready data: FHIRPath dates and times become their ISO text, a
    quantity literal (`2 'kg'`) a Quantity; everything else is returned as it is."""
    if isinstance(value, FP_Quantity):
        unit = str(value.unit)
        if unit.startswith("'") and unit.endswith("'"):
            code = unit[1:-1]
            return {"value": value.value, "unit": code, "system": "http://unitsofmeasure.org", "code": code}
        return {"value": value.value, "unit": unit}
    if isinstance(value, FP_Type):
        return str(value)
    return value


def evaluate(
    expression: str,
    resource: Any,
    variables: Mapping[str, Any] | None = None,
    functions: Mapping[str, FhirPathFunction] | None = None,
    *,
    keep_types: bool = False,
) -> list[Any]:
    """Evaluate `expression` on `resource`; `%resource` and `%context` default to it.

    With `keep_types` the elements of the result stay typed nodes, ready to be passed on as
    variables of later expressions (SDC `variable`s); otherwise they are plain data.
    Raises FhirPathError for a parse or evaluation failure, whatever fhirpathpy raised.
    """
    parsed = parse_expression(expression)
    context = {"resource": resource, "context": resource, **(variables or {})}
    options: dict[str, Any] = {}
    if functions:
        options["userInvocationTable"] = {name: {"fn": f.call, "arity": dict(f.arity)} for name, f in functions.items()}
    if keep_types:
        options["returnRawData"] = True
    try:
        return list(apply_parsed_path(resource, parsed, context, _R4, options or None))  # type: ignore[no-untyped-call]
    except FhirPathError:
        raise
    except Exception as error:  # evaluation errors surface as assorted exception types
        raise FhirPathError(f"Cannot evaluate FHIRPath '{expression}': {error}") from None

