"""The layering rule of design.md, executable: domain code imports no web or database framework,
storage imports neither services nor api, services never import api nor build SQL."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"

FORBIDDEN = {
    "fhir": ("fastapi", "starlette", "sqlalchemy", "app.storage", "app.services", "app.api"),
    "questionnaire": ("fastapi", "starlette", "sqlalchemy", "app.storage", "app.services", "app.api"),
    "content": ("fastapi", "starlette", "sqlalchemy", "app.storage", "app.services", "app.api"),
    "pathway": ("fastapi", "starlette", "sqlalchemy", "app.storage", "app.services", "app.api"),
    "security": ("fastapi", "starlette", "sqlalchemy", "httpx", "app.storage", "app.services", "app.api"),
    "referral": ("fastapi", "starlette", "sqlalchemy", "httpx", "app.storage", "app.services", "app.api"),
    "cds": ("fastapi", "starlette", "sqlalchemy", "httpx", "app.storage", "app.services", "app.api"),
    "pages": ("fastapi", "starlette", "sqlalchemy", "httpx", "jinja2", "app.storage", "app.services", "app.api"),
    "storage": ("fastapi", "starlette", "app.services", "app.api"),
    "services": ("fastapi", "starlette", "sqlalchemy", "app.api"),
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downwards(package: str) -> None:
    offences = [
        f"{path.relative_to(APP)} imports {name}"
        for path in sorted((APP / package).rglob("*.py"))
        for name in _imports(path)
        if any(name == banned or name.startswith(banned + ".") for banned in FORBIDDEN[package])
    ]
    assert offences == []
