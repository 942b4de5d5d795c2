"""`$process-message` at a receiving server: a good message is stored once and acknowledged `ok`;
malformed and hostile ones get the right acknowledgement (or a 4xx when there is nothing to
acknowledge) and leave the store exactly as it was."""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from app.config import Settings
from app.referral import codes
from tests.api.referral_apps import Running, message, running
from tests.referral_data import FHIR_JSON, dk_org, patient
from tests.tokens import Issuer

SENDER = "http://sender.test"
RECEIVER = "http://receiver.test"
_gp = dk_org("gp-practice")
_spine = dk_org("spine-unit")
_stranger = dk_org("stranger")


@pytest.fixture(scope="module")
async def receiver(settings: Settings, scratch_database: Callable[[str], str]) -> AsyncIterator[Running]:
    async with running(settings, scratch_database("pm_receiver"), _spine, RECEIVER, {SENDER: _gp}, message_max_entries=30) as app:
        yield app


def new_referral(message_id: str | None = None) -> dict[str, Any]:
    """A valid DK new-referral from the GP practice to the spine unit."""
    rid = str(uuid.uuid4())
    person = {**patient("DK"), "id": "p1"}
    role = {"resourceType": "PractitionerRole", "id": "r1", "organization": {"reference": _gp.reference}}
    request = {
        "resourceType": "ServiceRequest",
        "id": "s1",
        "identifier": [{"system": codes.REFERRAL_ID, "value": rid}],
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "requester": {"reference": "PractitionerRole/r1"},
        "performer": [{"reference": _spine.reference}],
    }
    task = {
        "resourceType": "Task",
        "id": "t1",
        "identifier": [{"system": codes.REFERRAL_ID, "value": rid}],
        "status": "requested",
        "intent": "order",
        "focus": {"reference": "ServiceRequest/s1"},
        "for": {"reference": "Patient/p1"},
        "owner": {"reference": _spine.reference},
    }
    return message(_gp, SENDER, _spine, RECEIVER, [request, task, person, role], focus=("ServiceRequest/s1",), message_id=message_id or str(uuid.uuid4()))


async def _post(receiver: Running, body: Any) -> tuple[int, dict[str, Any]]:
    response = await receiver.client.post("/$process-message", json=body, headers=FHIR_JSON)
    return response.status_code, response.json()


def _ack(answer: dict[str, Any]) -> tuple[str, str]:
    header = answer["entry"][0]["resource"]
    assert header["eventCoding"] == {"system": codes.MEDCOM_EVENT, "code": "acknowledgement-message"}
    return header["response"]["code"], header["response"]["identifier"]


def _outcome_text(answer: dict[str, Any]) -> str:
    return " ".join(
        issue["diagnostics"]
        for entry in answer["entry"]
        if entry["resource"]["resourceType"] == "OperationOutcome"
        for issue in entry["resource"]["issue"]
    )


async def test_a_good_message_is_stored_once_and_acknowledged_ok_again_when_repeated(receiver: Running) -> None:
    body = new_referral()
    status, answer = await _post(receiver, body)
    assert status == 200 and _ack(answer) == ("ok", body["id"])
    ack_header = answer["entry"][0]["resource"]
    assert ack_header["destination"][0]["endpoint"] == SENDER  # back to the sender's source endpoint
    rid = body["entry"][3]["resource"]["identifier"][0]["value"]
    tasks = (await receiver.client.get("/Task", params={"identifier": f"{codes.REFERRAL_ID}|{rid}"})).json()
    assert [e["resource"]["status"] for e in tasks["entry"]] == ["received"]

    before = await receiver.snapshot()
    status, again = await _post(receiver, copy.deepcopy(body))
    assert status == 200 and again == answer  # the same acknowledgement, nothing processed twice
    assert await receiver.snapshot() == before


def _entry(body: dict[str, Any], resource_type: str) -> dict[str, Any]:
    return next(e for e in body["entry"] if e["resource"]["resourceType"] == resource_type)


def _header(body: dict[str, Any]) -> dict[str, Any]:
    header: dict[str, Any] = body["entry"][0]["resource"]
    return header


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set `Type.element` in the first entry of that type."""
    resource_type, element = path.split(".", 1)

    def change(body: dict[str, Any]) -> None:
        _entry(body, resource_type)["resource"][element] = value

    return change


def _first_entry_patient(body: dict[str, Any]) -> None:
    body["entry"].insert(0, body["entry"].pop(next(i for i, e in enumerate(body["entry"]) if e["resource"]["resourceType"] == "Patient")))


def _two_primaries(body: dict[str, Any]) -> None:
    header = _header(body)
    header["destination"] = header["destination"] * 2


def _stranger_receiver(body: dict[str, Any]) -> None:
    receiver_entry = next(e for e in body["entry"] if e["resource"].get("id") == _spine.id)
    receiver_entry["resource"]["identifier"] = _stranger.identifiers


def _forged_sender(body: dict[str, Any]) -> None:
    sender_entry = next(e for e in body["entry"] if e["resource"].get("id") == _gp.id)
    sender_entry["resource"]["identifier"] = _stranger.identifiers


def _duplicate_full_url(body: dict[str, Any]) -> None:
    body["entry"].append(copy.deepcopy(_entry(body, "Patient")))


def _wrong_full_url(body: dict[str, Any]) -> None:
    _entry(body, "Patient")["fullUrl"] = f"{SENDER}/Patient/someone-else"


def _no_full_url(body: dict[str, Any]) -> None:
    del _entry(body, "Patient")["fullUrl"]


def _search_parameter(body: dict[str, Any]) -> None:
    sp = {"resourceType": "SearchParameter", "id": "evil", "url": "http://evil.example/sp", "name": "evil", "status": "active", "description": "x", "code": "evil", "base": ["Patient"], "type": "token", "expression": "Patient.id"}
    body["entry"].append({"fullUrl": f"{SENDER}/SearchParameter/evil", "resource": sp})


def _many_entries(body: dict[str, Any]) -> None:
    for index in range(40):
        body["entry"].append({"fullUrl": f"{SENDER}/Basic/b{index}", "resource": {"resourceType": "Basic", "id": f"b{index}", "code": {"text": "x"}}})


def _script(body: dict[str, Any]) -> None:
    _entry(body, "Patient")["resource"]["text"] = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script></div>'}


def _event_handler(body: dict[str, Any]) -> None:
    _entry(body, "Patient")["resource"]["text"] = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml"><img src="x" onerror="alert(1)"/></div>'}


def _no_referral_id(body: dict[str, Any]) -> None:
    del _entry(body, "ServiceRequest")["resource"]["identifier"]


def _control_character(body: dict[str, Any]) -> None:
    _entry(body, "Patient")["resource"]["name"][0]["family"] = "Jen\x00sen"


def _destination(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        _header(body)["destination"][0].update(changes)

    return change


def _header_set(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        _header(body).update(changes)

    return change


def _body_set(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        body.update(changes)
        for key in [k for k, v in changes.items() if v is None]:
            del body[key]

    return change


# (name, change, the issue text the acknowledgement must name)
FATAL: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("bundle type transaction", _body_set(type="transaction"), "Bundle.type must be 'message'"),
    ("no timestamp", _body_set(timestamp=None), "needs a timestamp"),
    ("wrong first entry", _first_entry_patient, "first entry of a message must be its MessageHeader"),
    ("unknown event", _header_set(eventCoding={"system": codes.MESSAGE_EVENT, "code": "delete-everything"}), "Unknown event"),
    ("event of another system", _header_set(eventCoding={"system": "http://example.org/events", "code": "new-referral"}), "Unknown event"),
    ("an acknowledgement sent as a message", _header_set(eventCoding={"system": codes.MEDCOM_EVENT, "code": "acknowledgement-message"}), "acknowledgement message is not accepted"),
    ("wrong receiver", _stranger_receiver, "not a receiver"),
    ("wrong destination endpoint", _destination(endpoint="http://elsewhere.test"), "not a receiver"),
    ("two primary destinations", _two_primaries, "exactly one primary destination"),
    ("unknown sender endpoint", _header_set(source={"endpoint": "http://intruder.test"}), "not a partner endpoint"),
    ("forged sender", _forged_sender, "is not the organisation registered for the partner endpoint"),
    ("dangling reference", _set("ServiceRequest.subject", {"reference": "Patient/nobody"}), "resolves to nothing"),
    ("reference out of the message", _set("ServiceRequest.requester", {"reference": "http://evil.example/PractitionerRole/1"}), "resolves to nothing"),
    ("duplicate fullUrl", _duplicate_full_url, "Two entries have the fullUrl"),
    ("fullUrl naming another resource", _wrong_full_url, "does not name this"),
    ("entry without fullUrl", _no_full_url, "needs an absolute or urn:uuid fullUrl"),
    ("invalid resource", _set("Patient.birthDate", "soon"), "birthDate"),
    ("status outside its value set", _set("ServiceRequest.status", "sent-by-fax"), "not a code of its required value set"),
    ("focus of the wrong type", _header_set(focus=[{"reference": "Patient/p1"}]), "has one focus"),
    ("a resource a referral does not carry", _search_parameter, "does not carry SearchParameter"),
    ("script in the narrative", _script, "must not contain scripts"),
    ("event handler in the narrative", _event_handler, "must not contain scripts"),
    ("oversized: too many entries", _many_entries, "at most 30 are accepted"),
    ("referral without its id", _no_referral_id, "referral id"),
    ("control character", _control_character, "control characters"),
    ("sender that is not an Organization", _header_set(sender={"reference": "Patient/p1"}), "sender must be an Organization"),
]


@pytest.mark.parametrize(("name", "change", "says"), FATAL, ids=[name for name, _, _ in FATAL])
async def test_a_bad_message_gets_fatal_error_and_changes_nothing(receiver: Running, name: str, change: Callable[[dict[str, Any]], None], says: str) -> None:
    body = new_referral()
    change(body)
    before = await receiver.snapshot()
    status, answer = await _post(receiver, body)
    assert status == 200, answer
    assert _ack(answer) == ("fatal-error", body["entry"][[e["resource"]["resourceType"] for e in body["entry"]].index("MessageHeader")]["resource"]["id"])
    assert says in _outcome_text(answer), _outcome_text(answer)
    assert await receiver.snapshot() == before


async def test_a_message_id_reused_for_other_content_is_refused_and_the_first_stands(receiver: Running) -> None:
    first = new_referral()
    assert _ack((await _post(receiver, first))[1])[0] == "ok"
    before = await receiver.snapshot()
    impostor = new_referral(message_id=first["id"])
    _, answer = await _post(receiver, impostor)
    assert _ack(answer) == ("fatal-error", first["id"]) and "already used for another message" in _outcome_text(answer)
    assert await receiver.snapshot() == before


async def test_the_same_referral_twice_in_two_messages_is_refused(receiver: Running) -> None:
    first = new_referral()
    assert _ack((await _post(receiver, first))[1])[0] == "ok"
    again = copy.deepcopy(first)
    again["id"] = _header(again)["id"] = str(uuid.uuid4())
    again["entry"][0]["fullUrl"] = f"{SENDER}/MessageHeader/{again['id']}"
    before = await receiver.snapshot()
    answer = (await _post(receiver, again))[1]
    assert _ack(answer)[0] == "fatal-error" and "already received" in _outcome_text(answer)
    assert await receiver.snapshot() == before


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"resourceType": "Patient"}, 400),
        ({"resourceType": "Bundle", "type": "message", "entry": [{"resource": {"resourceType": "Patient", "id": "x"}}]}, 400),
        ({"resourceType": "Bundle", "type": "message", "entry": [{"resource": {"resourceType": "MessageHeader", "eventCoding": {"code": "x"}}}]}, 400),
        ({"resourceType": "Bundle", "type": "message", "entry": "not a list"}, 400),
    ],
    ids=["not a Bundle", "no MessageHeader", "MessageHeader without id", "entries not a list"],
)
async def test_nothing_to_acknowledge_is_a_400_outcome(receiver: Running, body: dict[str, Any], status: int) -> None:
    before = await receiver.snapshot()
    code, answer = await _post(receiver, body)
    assert (code, answer["resourceType"]) == (status, "OperationOutcome")
    assert await receiver.snapshot() == before


async def test_an_oversized_body_is_413_and_a_nested_bomb_is_400(receiver: Running) -> None:
    before = await receiver.snapshot()
    big = new_referral()
    _entry(big, "Patient")["resource"]["name"][0]["family"] = "x" * (2 * 1024 * 1024)
    response = await receiver.client.post("/$process-message", json=big, headers=FHIR_JSON)
    assert response.status_code == 413 and response.json()["resourceType"] == "OperationOutcome"
    bomb = "[" * 5000 + "]" * 5000
    response = await receiver.client.post("/$process-message", content=bomb, headers=FHIR_JSON)
    assert response.status_code == 400 and response.json()["resourceType"] == "OperationOutcome"
    assert await receiver.snapshot() == before


async def test_an_update_for_an_unknown_referral_is_a_transient_error(receiver: Running) -> None:
    body = new_referral()
    header = _header(body)
    header["eventCoding"] = {"system": codes.MESSAGE_EVENT, "code": "update-referral"}
    header["reason"] = {"coding": [{"system": codes.DECISION, "code": "supply-information"}]}
    header["focus"] = [{"reference": "Task/t1"}]
    before = await receiver.snapshot()
    answer = (await _post(receiver, body))[1]
    assert _ack(answer)[0] == "transient-error" and "not known here" in _outcome_text(answer)
    assert await receiver.snapshot() == before


async def test_with_authentication_only_the_client_bound_to_the_partner_may_send_as_it(
    secure_settings: Settings, scratch_database: Callable[[str], str], issuer: Issuer
) -> None:
    def token(client_id: str, scope: str = "system/MessageHeader.c") -> dict[str, str]:
        return issuer.headers(scope, aud=RECEIVER, client_id=client_id)

    bound = (f"{SENDER}=gp-client",)
    admin = token("admin", "system/*.cruds")
    async with running(secure_settings, scratch_database("pm_bound"), _spine, RECEIVER, {SENDER: _gp}, admin, partner_clients=bound) as app:
        # the sender needs no scope beyond MessageHeader.c: what the message files is the server's doing
        sent = await app.client.post("/$process-message", json=new_referral(), headers={**FHIR_JSON, **token("gp-client")})
        assert _ack(sent.json())[0] == "ok", sent.text
        before = await app.snapshot()
        forged = await app.client.post("/$process-message", json=new_referral(), headers={**FHIR_JSON, **token("spine-client")})
        assert _ack(forged.json())[0] == "fatal-error"
        assert "may not send as" in _outcome_text(forged.json())
        assert await app.snapshot() == before
