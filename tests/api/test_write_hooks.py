"""Write hooks: a use case can amend or refuse every create/update of its resource type."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest
from fastapi import FastAPI

from app.fhir.outcome import ErrorCategory, FhirError, Issue
from app.security.access import Access
from app.services import resources
from app.services.context import FhirContext, HookResult
from app.storage.repository import StoredVersion, StoreSession
from tests.factories import patient, unique


async def _tag_and_guard(
    session: StoreSession, context: FhirContext, resource: dict[str, Any], current: StoredVersion | None, access: Access
) -> HookResult:
    if resource.get("gender") == "unknown":
        raise FhirError(ErrorCategory.INVALID_RESOURCE, "hook refuses unknown gender", ("Patient.gender",))
    note = "created" if current is None else f"replaces version {current.version}"
    amended = {**resource, "meta": {"tag": [{"system": "urn:test:hook", "code": "seen"}]}}
    return HookResult(amended, (Issue("warning", "informational", note),))


@pytest.fixture
def hooked(app: FastAPI) -> FhirContext:
    context: FhirContext = app.state.fhir
    return replace(context, write_hooks={"Patient": [_tag_and_guard]})


async def test_hook_amends_create_and_update_and_reports_warnings(hooked: FhirContext) -> None:
    created = await resources.create(hooked, "Patient", patient(family=unique("Hook")))
    assert orjson.loads(created.stored.content or b"")["meta"]["tag"][0]["code"] == "seen"
    assert [i.diagnostics for i in created.issues] == ["created"]
    body = {**orjson.loads(created.stored.content or b""), "active": True}
    updated = await resources.update(hooked, "Patient", created.stored.id, body)
    assert updated.stored.version == 2
    assert [i.diagnostics for i in updated.issues] == ["replaces version 1"]


async def test_hook_refusal_stores_nothing(hooked: FhirContext) -> None:
    created = await resources.create(hooked, "Patient", patient(family=unique("Hook")))
    body = {**orjson.loads(created.stored.content or b""), "gender": "unknown"}
    with pytest.raises(FhirError) as refused:
        await resources.update(hooked, "Patient", created.stored.id, body)
    assert refused.value.category is ErrorCategory.INVALID_RESOURCE
    current = await resources.read(hooked, "Patient", created.stored.id)
    assert current.version == 1
