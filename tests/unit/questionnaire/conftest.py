"""The shipped Questionnaires, read fresh from plandefinitions/ for each test (tests may edit them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

CONTENT = Path(__file__).resolve().parents[3] / "plandefinitions"


def content(name: str) -> dict[str, Any]:
    return json.loads((CONTENT / name).read_text())  # type: ignore[no-any-return]


@pytest.fixture
def start_back() -> dict[str, Any]:
    return content("Questionnaire-start-back.json")


@pytest.fixture
def lbp() -> dict[str, Any]:
    return content("Questionnaire-lbp-assessment.json")
