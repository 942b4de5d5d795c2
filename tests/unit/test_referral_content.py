"""The referral content in fhir_profiles/: local code systems say they are local and hold every code
the engine emits; every referral operation has its OperationDefinition; MessageDefinitions match
the events."""

from __future__ import annotations

from pathlib import Path

from app.content.loader import read_content
from app.referral import codes
from app.referral.validation import EVENTS
from app.referral.workflow import DECISIONS
from app.services.referrals import ReferralConfig, ReferralService

CONTENT = read_content([Path(__file__).resolve().parents[2] / "fhir_profiles"])
BY_URL = {r["url"]: r for r in CONTENT if "url" in r}


def _codes(system: str) -> set[str]:
    return {c["code"] for c in BY_URL[system]["concept"]}


def test_local_code_systems_say_so_and_hold_the_codes_the_engine_emits() -> None:
    local = [r for r in CONTENT if r["resourceType"] == "CodeSystem"]
    assert local and all(r["url"].startswith("http://backpath.dev/fhir/") and "LOCAL" in r["description"] for r in local)
    assert EVENTS | {"acknowledge"} == _codes(codes.MESSAGE_EVENT)
    assert set(DECISIONS) == _codes(codes.DECISION)
    assert {d.business_status for d in DECISIONS.values() if d.business_status} | {"queued", "delivered", "delivery-failed", "sbst-requested"} == _codes(codes.STATUS)
    assert {"medcom-fhir-message", "zorgdomein-style"} == _codes(codes.CHANNEL)
    assert {"findings", "advice", "involve", "follow-up"} == _codes(codes.HASP_SECTION)
    assert {"teleconsult-answer"} == _codes(codes.DOCUMENT_TYPE)


def test_every_referral_operation_and_message_is_defined_in_the_content() -> None:
    service = ReferralService(ReferralConfig(frozenset(), "", frozenset()))
    for operation in service.operations:
        if operation.definition.startswith("http://backpath.dev/"):
            definition = BY_URL[operation.definition]
            assert (definition["code"], definition["resource"], definition["instance"]) == (operation.code, ["Task"], True)
    for event in EVENTS:
        assert BY_URL[f"{codes.MESSAGE_DEFINITION}{event}"]["eventCoding"] == {"system": codes.MESSAGE_EVENT, "code": event}
