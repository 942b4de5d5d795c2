"""Texts in the user's language. Spec: https://hl7.org/fhir/R4/extension-translation.html

A string element `x` may carry translations in `_x.extension` (url `translation`, parts `lang` and
`content`). `localized` returns a copy of a definition whose strings are replaced by the translation
for the requested language (an exact tag first, then its primary subtag: `da-DK` → `da`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["TRANSLATION_EXTENSION", "language_of", "localized"]

TRANSLATION_EXTENSION = "http://hl7.org/fhir/StructureDefinition/translation"


def language_of(concept: Mapping[str, Any] | None) -> str | None:
    """The language tag in a `userLanguage` CodeableConcept (its first code, else its text)."""
    if not concept:
        return None
    for coding in concept.get("coding") or []:
        if isinstance(coding.get("code"), str):
            return str(coding["code"])
    text = concept.get("text")
    return text if isinstance(text, str) and text else None


def localized(value: Any, language: str | None) -> Any:
    """`value` with every translated string replaced by its `language` version (a new object)."""
    if language is None:
        return value
    wanted = (language.lower(), language.lower().split("-")[0])
    return _walk(value, wanted)


def _walk(value: Any, wanted: tuple[str, str]) -> Any:
    if isinstance(value, list):
        return [_walk(item, wanted) for item in value]
    if not isinstance(value, dict):
        return value
    result = {key: _walk(item, wanted) for key, item in value.items()}
    for key, item in value.items():
        if key.startswith("_") and isinstance(item, dict) and isinstance(value.get(key[1:]), str):
            translation = _translation(item, wanted)
            if translation is not None:
                result[key[1:]] = translation
    return result


def _translation(element: Mapping[str, Any], wanted: tuple[str, str]) -> str | None:
    found: dict[str, str] = {}
    for extension in element.get("extension") or []:
        if extension.get("url") != TRANSLATION_EXTENSION:
            continue
        parts = {part.get("url"): part for part in extension.get("extension") or []}
        lang = (parts.get("lang") or {}).get("valueCode")
        content = (parts.get("content") or {}).get("valueString")
        if isinstance(lang, str) and isinstance(content, str):
            found.setdefault(lang.lower(), content)
    exact, primary = wanted
    if exact in found:
        return found[exact]
    return next((text for lang, text in found.items() if lang.split("-")[0] == primary), None)
