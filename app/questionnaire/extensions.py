"""The SDC and core extensions the engine reads, and small accessors for them.

SDC 4.0: https://hl7.org/fhir/uv/sdc/ (expressions.html, behavior.html, extraction.html,
populate.html); core extensions: https://hl7.org/fhir/extensions/.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = [
    "CALCULATED_EXPRESSION",
    "CODE_SYSTEM_PROPERTY_ITEM_WEIGHT",
    "ENABLE_WHEN_EXPRESSION",
    "EXPANSION_PROPERTY",
    "EXTRACT_PERSIST",
    "INITIAL_EXPRESSION",
    "ITEM_WEIGHT",
    "LAUNCH_CONTEXT",
    "MAX_DECIMAL_PLACES",
    "MAX_VALUE",
    "MIN_LENGTH",
    "MIN_VALUE",
    "OBSERVATION_EXTRACT",
    "OBSERVATION_EXTRACT_CATEGORY",
    "ORDINAL_VALUE",
    "REGEX",
    "TRANSLATION",
    "UNIT",
    "VARIABLE",
    "WEIGHT_EXTENSIONS",
    "expression_of",
    "extension_value",
    "extensions",
    "translations",
]

_SDC = "http://hl7.org/fhir/uv/sdc/StructureDefinition/"
_CORE = "http://hl7.org/fhir/StructureDefinition/"

CALCULATED_EXPRESSION = _SDC + "sdc-questionnaire-calculatedExpression"
INITIAL_EXPRESSION = _SDC + "sdc-questionnaire-initialExpression"
ENABLE_WHEN_EXPRESSION = _SDC + "sdc-questionnaire-enableWhenExpression"
LAUNCH_CONTEXT = _SDC + "sdc-questionnaire-launchContext"
OBSERVATION_EXTRACT = _SDC + "sdc-questionnaire-observationExtract"
OBSERVATION_EXTRACT_CATEGORY = _SDC + "sdc-questionnaire-observation-extract-category"
VARIABLE = _CORE + "variable"
ITEM_WEIGHT = _CORE + "itemWeight"
ORDINAL_VALUE = _CORE + "ordinalValue"  # SDC 3 name of the same idea
WEIGHT_EXTENSIONS = (ITEM_WEIGHT, ORDINAL_VALUE)
MIN_VALUE = _CORE + "minValue"
MAX_VALUE = _CORE + "maxValue"
MIN_LENGTH = _CORE + "minLength"
REGEX = _CORE + "regex"
MAX_DECIMAL_PLACES = _CORE + "maxDecimalPlaces"
UNIT = _CORE + "questionnaire-unit"
TRANSLATION = _CORE + "translation"
# R5 ValueSet.expansion.contains.property carried into R4 (how the SDC examples give expansion weights)
EXPANSION_PROPERTY = "http://hl7.org/fhir/5.0/StructureDefinition/extension-ValueSet.expansion.contains.property"
CODE_SYSTEM_PROPERTY_ITEM_WEIGHT = "http://hl7.org/fhir/concept-properties#itemWeight"
# BackPath's own (local) extension: the Questionnaire asks $extract to store what it extracts
EXTRACT_PERSIST = "http://backpath.dev/fhir/StructureDefinition/questionnaire-extract-persist"


def extensions(element: Any, url: str) -> Iterator[dict[str, Any]]:
    """The extensions with `url` on `element` (a dict), in order."""
    if isinstance(element, dict):
        for extension in element.get("extension") or ():
            if isinstance(extension, dict) and extension.get("url") == url:
                yield extension


def extension_value(element: Any, url: str) -> Any:
    """The `value[x]` of the first extension with `url` on `element`, or None."""
    for extension in extensions(element, url):
        for key, value in extension.items():
            if key.startswith("value"):
                return value
    return None


def expression_of(element: Any, url: str) -> dict[str, Any] | None:
    """The Expression of the first `url` extension on `element`, or None."""
    value = extension_value(element, url)
    return value if isinstance(value, dict) else None


def translations(element: Any, field: str) -> dict[str, str]:
    """language → text of the standard translation extensions on `element._field`."""
    found: dict[str, str] = {}
    primitive = element.get(f"_{field}") if isinstance(element, dict) else None
    for extension in extensions(primitive, TRANSLATION):
        language = extension_value(extension, "lang")
        content = extension_value(extension, "content")
        if isinstance(language, str) and isinstance(content, str):
            found[language] = content
    return found
