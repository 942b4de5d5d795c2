"""The official R4 examples, loaded once into the database under test for the conformance tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B import get_fhir_model_class

from app.config import Settings
from app.main import create_app
from tests.factories import FHIR_JSON


@dataclass(frozen=True)
class Example:
    file: str
    resource_type: str
    id: str
    raw: bytes
    resource: dict[str, Any]

    @property
    def url(self) -> str:
        return f"/{self.resource_type}/{self.id}"


@dataclass(frozen=True)
class Rejected:
    """A file the R4B models do not accept; `example` is None when it is not a resource at all."""

    file: str
    reason: str
    example: Example | None
    unknown_type: bool


@dataclass(frozen=True)
class Corpus:
    accepted: list[Example]
    rejected: list[Rejected]


@pytest.fixture(scope="session")
def corpus(shared_dir: Path) -> Corpus:
    """Every JSON file of the examples package, sorted by whether the R4B models accept it."""
    accepted: list[Example] = []
    rejected: list[Rejected] = []
    for path in sorted((shared_dir / "conformance" / "hl7.fhir.r4.examples").glob("*.json")):
        raw = path.read_bytes()
        data = json.loads(raw)
        resource_type = data.get("resourceType") if isinstance(data, dict) else None
        if not isinstance(resource_type, str) or not isinstance(data.get("id"), str):
            rejected.append(Rejected(path.name, "not a resource", None, False))
            continue
        example = Example(path.name, resource_type, data["id"], raw, data)
        try:
            model = get_fhir_model_class(resource_type)
        except (KeyError, ValueError):
            rejected.append(Rejected(path.name, f"no R4B model for {resource_type}", example, True))
            continue
        try:
            model.model_validate(data)
        except (ValueError, TypeError) as error:  # pydantic's ValidationError is a ValueError
            rejected.append(Rejected(path.name, str(error).split("\n")[0], example, False))
            continue
        accepted.append(example)
    return Corpus(accepted, rejected)


@pytest.fixture(scope="session")
async def roomy_client(settings: Settings, corpus: Corpus) -> AsyncIterator[httpx.AsyncClient]:
    """The app on the same database with a body limit that fits the largest example
    (Bundle-searchParams.json is 2.2 MB; the shared test settings allow 1 MiB)."""
    largest = max(len(example.raw) for example in corpus.accepted)
    application = create_app(replace(settings, max_body_bytes=max(settings.max_body_bytes, largest)))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=60) as http:
            yield http


@pytest.fixture(scope="session")
async def loaded_examples(roomy_client: httpx.AsyncClient, corpus: Corpus) -> dict[str, list[dict[str, Any]]]:
    """Every accepted example PUT at its id (a no-op when already there); by resource type."""
    semaphore = asyncio.Semaphore(8)

    async def put(example: Example) -> None:
        async with semaphore:
            response = await roomy_client.put(example.url, content=example.raw, headers=FHIR_JSON)
            assert response.status_code in (200, 201), f"{example.file}: {response.status_code} {response.text[:300]}"

    await asyncio.gather(*(put(example) for example in corpus.accepted))
    by_type: dict[str, list[dict[str, Any]]] = {}
    for example in corpus.accepted:
        by_type.setdefault(example.resource_type, []).append(example.resource)
    return by_type
