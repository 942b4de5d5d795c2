"""The one way BackPath evaluates FHIRPath: fhirpathpy over the R4 model, compiled once per text."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from fhirpathpy import compile as compile_fhirpath
from fhirpathpy.models import models

__all__ = ["FhirPathError", "compile_expression", "evaluate"]

_R4 = models["r4"]

Compiled = Callable[..., list[Any]]


class FhirPathError(ValueError):
    """An expression that does not parse or cannot be evaluated."""


@lru_cache(maxsize=4096)
def compile_expression(expression: str) -> Compiled:
    """Compile `expression` once; raise FhirPathError when it does not parse."""
    try:
        return compile_fhirpath(expression, _R4)
    except Exception as error:  # fhirpathpy raises bare Exceptions from its ANTLR parser
        raise FhirPathError(f"Cannot parse FHIRPath '{expression}': {error}") from None


def evaluate(expression: str, resource: Any, variables: Mapping[str, Any] | None = None) -> list[Any]:
    """Evaluate `expression` on `resource` with `%resource` and `%context` set to it."""
    context = {"resource": resource, "context": resource, **(variables or {})}
    try:
        return compile_expression(expression)(resource, context)
    except FhirPathError:
        raise
    except Exception as error:  # evaluation errors surface as assorted exception types
        raise FhirPathError(f"Cannot evaluate FHIRPath '{expression}': {error}") from None
