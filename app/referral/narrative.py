"""Generated narrative for the resources BackPath sends, and the safety check for narrative received.

Spec: https://hl7.org/fhir/R4/narrative.html. MedCom requires narrative text in every message
resource; a generated one lists the resource's own top-level facts (ids, identifiers, codes,
references, dates), escaped, so a human reader sees what the machine reads.
"""

from __future__ import annotations

import html
import re
from typing import Any

__all__ = ["narrative", "unsafe_narrative"]

_XHTML = "http://www.w3.org/1999/xhtml"
_SKIPPED = frozenset({"resourceType", "id", "meta", "text", "contained", "extension", "modifierExtension", "entry", "section"})
_MAX_FACTS = 16

# R4 narrative rules txt-1/txt-2: no scripts, forms, event attributes or javascript: links.
_UNSAFE = re.compile(r"<\s*(script|iframe|object|embed|form|input|base|link|meta|style)\b|\son\w+\s*=|javascript:", re.IGNORECASE)


def narrative(resource: dict[str, Any]) -> dict[str, str]:
    """A `generated` Narrative summarising `resource`."""
    rows = [f"<tr><th>{html.escape(name)}</th><td>{html.escape(text)}</td></tr>" for name, text in _facts(resource)]
    title = f"{resource['resourceType']} {resource.get('id', '')}".strip()
    div = f'<div xmlns="{_XHTML}"><p><b>{html.escape(title)}</b></p>' + (f"<table>{''.join(rows)}</table>" if rows else "") + "</div>"
    return {"status": "generated", "div": div}


def unsafe_narrative(div: str) -> str | None:
    """Why `div` is not acceptable narrative (R4 txt-1, txt-2), or None when it is."""
    stripped = div.strip()
    if not stripped.startswith("<div") or _XHTML not in stripped[: stripped.find(">") + 1]:
        return "narrative must be an XHTML <div> in the XHTML namespace"
    if _UNSAFE.search(stripped):
        return "narrative must not contain scripts, forms, event handlers or javascript: links"
    return None


def _facts(resource: dict[str, Any]) -> list[tuple[str, str]]:
    facts: list[tuple[str, str]] = []
    for name, value in resource.items():
        if name in _SKIPPED or name.startswith("_"):
            continue
        text = _text(value)
        if text:
            facts.append((name, text))
        if len(facts) >= _MAX_FACTS:
            break
    return facts


def _text(value: Any) -> str:
    if isinstance(value, str | int | float | bool):
        return str(value).lower() if isinstance(value, bool) else str(value)
    if isinstance(value, list):
        return "; ".join(t for t in (_text(item) for item in value[:5]) if t)
    if not isinstance(value, dict):
        return ""
    if "reference" in value or ("display" in value and "system" not in value):
        return " ".join(str(value[k]) for k in ("display", "reference") if k in value)
    if "coding" in value or "text" in value:
        codings = [_text(c) for c in value.get("coding", [])]
        return str(value.get("text") or "; ".join(c for c in codings if c))
    if "code" in value or ("system" in value and "value" in value):
        label = value.get("display") or value.get("code") or value.get("value")
        return f"{value.get('system', '')}|{label}".lstrip("|")
    if "family" in value or "given" in value:
        return " ".join([*value.get("given", []), value.get("family", "")]).strip()
    if "start" in value or "end" in value:
        return f"{value.get('start', '')} to {value.get('end', '')}"
    if "endpoint" in value:
        receiver = _text(value.get("receiver")) if isinstance(value.get("receiver"), dict) else ""
        return f"{value['endpoint']} {receiver}".strip()
    return ""
