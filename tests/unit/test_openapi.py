"""openapi/openapi.json is generated from the app (`backpath export-openapi`); a stale copy fails."""

from __future__ import annotations

import json
from pathlib import Path

from app.cli import openapi_document

OPENAPI = Path(__file__).resolve().parents[2] / "openapi" / "openapi.json"


def test_committed_openapi_document_is_current() -> None:
    committed = json.loads(OPENAPI.read_text())
    assert committed == json.loads(openapi_document()), "run: .venv/bin/backpath export-openapi"
