"""The message and document builders against referral-standards.md §2 (MedCom) and §3 (ZorgDomein,
Nictiz ELZ, HASP), and the reference rules they rely on."""

from __future__ import annotations

from typing import Any

import pytest

from app.fhir.models import validate_resource
from app.referral import codes
from app.referral.medcom import Envelope, Party, acknowledgement, message_bundle, provenance
from app.referral.narrative import narrative, unsafe_narrative
from app.referral.references import bundle_target, local_key, references, rewrite_references
from app.referral.reports import ReportContent, report_composition
from app.referral.validation import Rejected, read_message
from app.referral.zorgdomein import RequestContent, document_bundle, request_composition

GP = {"resourceType": "Organization", "id": "gp", "identifier": [{"system": codes.SOR, "value": "999900000000001"}, {"system": codes.GLN, "value": "9520000000019"}], "name": "TEST GP"}
SPINE = {"resourceType": "Organization", "id": "spine", "identifier": [{"system": codes.SOR, "value": "999900000000002"}, {"system": codes.GLN, "value": "9520000000026"}], "name": "TEST spine"}
CC = {"resourceType": "Organization", "id": "municipality", "identifier": [{"system": codes.GLN, "value": "9520000000033"}], "name": "TEST municipality"}
PATIENT = {"resourceType": "Patient", "id": "p", "identifier": [{"system": codes.CPR, "value": "9912345678"}]}
REQUEST = {
    "resourceType": "ServiceRequest",
    "id": "s",
    "status": "active",
    "intent": "order",
    "subject": {"reference": "Patient/p"},
    "performer": [{"reference": "Organization/spine"}],
}
US = Party(GP, "http://gp.test")
THEM = Party(SPINE, "http://spine.test")


def _message(**changes: Any) -> dict[str, Any]:
    envelope = Envelope(
        message_id="m-1",
        event={"system": codes.MESSAGE_EVENT, "code": "new-referral"},
        sender=US,
        primary=THEM,
        timestamp="2026-03-02T10:00:00.000Z",
        focus=("ServiceRequest/s",),
        definition=f"{codes.MESSAGE_DEFINITION}new-referral",
        **changes,
    )
    return message_bundle(envelope, [REQUEST, PATIENT], [provenance("pv-1", "m-1", "new-message", US, "2026-03-02T10:00:00.000Z")])


def test_the_message_bundle_has_the_header_first_and_every_reference_inside() -> None:
    bundle = _message()
    validate_resource(bundle, "Bundle")
    assert bundle["type"] == "message" and bundle["timestamp"]
    header = bundle["entry"][0]["resource"]
    assert header["resourceType"] == "MessageHeader" and header["id"] == bundle["id"] == "m-1"
    assert header["eventCoding"] == {"system": codes.MESSAGE_EVENT, "code": "new-referral"}
    assert header["source"] == {"endpoint": "http://gp.test"} and header["sender"] == {"reference": "Organization/gp"}
    [destination] = header["destination"]
    assert destination["extension"] == [{"url": codes.DESTINATION_USE_EXTENSION, "valueCoding": {"system": codes.DESTINATION_USE, "code": "primary"}}]
    assert destination["receiver"] == {"reference": "Organization/spine"} and destination["endpoint"] == "http://spine.test"
    urls = frozenset(e["fullUrl"] for e in bundle["entry"])
    for entry in bundle["entry"]:
        assert entry["resource"]["text"]["status"] == "generated"  # MedCom: narrative everywhere
        for _, reference in references(entry["resource"]):
            if not reference.startswith("MessageHeader/"):
                assert bundle_target(reference, entry["fullUrl"], urls), reference
    # a receiver with the spine unit's identity accepts it as it is
    read = read_message(bundle, frozenset({(codes.GLN, "9520000000026")}), "http://spine.test", 100)
    assert read.role == "primary" and read.event == "new-referral" and read.focus()[0]["resourceType"] == "ServiceRequest"


def test_cc_destinations_are_marked_cc() -> None:
    header = _message(cc=(Party(CC, "http://municipality.test"),))["entry"][0]["resource"]
    uses = [d["extension"][0]["valueCoding"]["code"] for d in header["destination"]]
    assert uses == ["primary", "cc"]


def test_the_nl_envelope_has_no_medcom_extension() -> None:
    header = _message(medcom=False)["entry"][0]["resource"]
    assert "extension" not in header["destination"][0]


@pytest.mark.parametrize(
    ("activity", "previous", "role"),
    [("reply-message", ("m-0", "revision"), "revision"), ("forward-message", ("m-0", "revision"), "revision"), ("retract-message", ("m-0", "removal"), "removal")],
)
def test_provenance_names_the_previous_message_with_its_role(activity: str, previous: tuple[str, str], role: str) -> None:
    made = provenance("pv", "m-2", activity, US, "2026-03-02T10:00:00.000Z", previous)
    validate_resource(made, "Provenance")
    assert made["target"] == [{"reference": "MessageHeader/m-2"}]
    assert made["activity"]["coding"] == [{"system": codes.ACTIVITY, "code": activity}]
    assert made["agent"][0]["who"] == {"reference": "Organization/gp", "identifier": {"system": codes.SOR, "value": "999900000000001"}}
    assert made["entity"] == [{"role": role, "what": {"reference": "MessageHeader/m-0"}}]
    assert "entity" not in provenance("pv", "m-1", "new-message", US, "now")


def test_an_acknowledgement_answers_the_message_id_with_a_code_and_details() -> None:
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "invalid", "diagnostics": "bad"}]}
    ack = acknowledgement("a-1", "m-1", "fatal-error", THEM, "2026-03-02T10:00:01.000Z", US, outcome)
    validate_resource(ack, "Bundle")
    header = ack["entry"][0]["resource"]
    assert header["eventCoding"] == {"system": codes.MEDCOM_EVENT, "code": "acknowledgement-message"}
    assert header["response"]["identifier"] == "m-1" and header["response"]["code"] == "fatal-error"
    details = header["response"]["details"]["reference"]
    assert any(f"{e['resource']['resourceType']}/{e['resource']['id']}" == details for e in ack["entry"])
    assert header["destination"][0]["endpoint"] == "http://gp.test"


def test_the_meekijkconsult_request_follows_the_elz_sections_with_an_empty_answer() -> None:
    content = RequestContent(reason="L03", question="Factors hindering recovery?", further="STarT Back: High")
    composition = request_composition("c", "r-1", "Patient/p", "PractitionerRole/gp", "Organization/gp", "2026-03-02", "ServiceRequest/s", ["Observation/o"], content)
    validate_resource(composition, "Composition")
    assert {(c["system"], c["code"]) for c in composition["type"]["coding"]} == {(codes.LOINC, "57133-1"), (codes.ZORGDOMEIN_DOCUMENT_TYPE, "teleconsult-request-form")}
    assert composition["identifier"] == {"system": codes.REFERRAL_ID, "value": "r-1"} and composition["status"] == "final"
    core, answer = composition["section"]
    assert core["code"]["coding"][0]["code"] == "406550009"
    assert [s["code"]["coding"][0]["code"] for s in core["section"]] == ["440378000", "108631000146107", "240471000146100", "159121000146100"]
    assert core["section"][2]["entry"] == [{"reference": "ServiceRequest/s"}] and core["section"][3]["entry"] == [{"reference": "Observation/o"}]
    assert answer["code"]["coding"][0]["code"] == "240481000146103" and "entry" not in answer and answer["emptyReason"]


def test_a_document_bundle_puts_the_composition_first_and_keeps_its_id() -> None:
    composition = request_composition("c", "r-1", "Patient/p", "Organization/gp", "Organization/gp", "2026-03-02", "ServiceRequest/s", [], RequestContent("x", "y"))
    document = document_bundle("d-1", "http://gp.test", "2026-03-02T10:00:00Z", composition, [PATIENT, REQUEST, GP, PATIENT])
    validate_resource(document, "Bundle")
    assert document["type"] == "document" and document["id"] == "d-1"
    assert [e["resource"]["resourceType"] for e in document["entry"]] == ["Composition", "Patient", "ServiceRequest", "Organization"]


@pytest.mark.parametrize(("country", "code"), [("NL", "teleconsult-answer"), ("DK", codes.DISCHARGE_SUMMARY)])
def test_the_report_answers_first_in_hasp_sections_then_gives_the_background(country: str, code: str) -> None:
    content = ReportContent(findings="F", advice="A", involve="I", follow_up="U", question="Q?")
    report = report_composition("c", country, "r-1", "Patient/p", "Organization/b", "Organization/b", "2026-03-09", content)
    validate_resource(report, "Composition")
    assert report["type"]["coding"][0]["code"] == code
    answer, background = report["section"]
    assert answer["title"] == "Antwoord op uw vraag"
    assert [(s["code"]["coding"][0]["system"], s["code"]["coding"][0]["code"]) for s in answer["section"]] == [
        (codes.HASP_SECTION, "findings"),
        (codes.HASP_SECTION, "advice"),
        (codes.HASP_SECTION, "involve"),
        (codes.HASP_SECTION, "follow-up"),
    ]
    assert background["code"]["coding"][0]["code"] == codes.NL_SECTION["question"]


def test_references_resolve_by_the_bundle_rules() -> None:
    urls = frozenset({"http://a.test/Patient/1", "urn:uuid:6a1f"})
    assert bundle_target("Patient/1", "http://a.test/Observation/9", urls) == "http://a.test/Patient/1"
    assert bundle_target("Patient/1/_history/2", "http://a.test/Observation/9", urls) == "http://a.test/Patient/1"
    assert bundle_target("urn:uuid:6a1f", None, urls) == "urn:uuid:6a1f"
    assert bundle_target("Patient/1", "http://b.test/Observation/9", urls) is None
    assert bundle_target("Patient/1", "urn:uuid:6a1f", urls) is None
    assert local_key("Patient/1") == ("Patient", "1") and local_key("http://x/Patient/1") is None


def test_a_rewrite_drops_references_it_cannot_keep_and_empty_elements_with_them() -> None:
    resource = {"resourceType": "Task", "for": {"reference": "Patient/1"}, "owner": {"reference": "Organization/x", "display": "X"}, "input": [{"type": {"text": "t"}, "valueReference": {"reference": "Basic/1"}}]}
    rewritten = rewrite_references(resource, lambda r: "Patient/9" if r == "Patient/1" else None)
    assert rewritten == {"resourceType": "Task", "for": {"reference": "Patient/9"}, "owner": {"display": "X"}, "input": [{"type": {"text": "t"}}]}


def test_generated_narrative_is_escaped_and_unsafe_narrative_is_caught() -> None:
    text = narrative({"resourceType": "Patient", "id": "p", "name": [{"family": "<b>O'Neil</b>"}]})
    assert "&lt;b&gt;" in text["div"] and unsafe_narrative(text["div"]) is None
    assert unsafe_narrative('<div xmlns="http://www.w3.org/1999/xhtml"><a href="javascript:x()">x</a></div>')
    assert unsafe_narrative("<p>not a div</p>")


def test_a_message_to_someone_else_is_rejected() -> None:
    with pytest.raises(Rejected) as rejected:
        read_message(_message(), frozenset({(codes.GLN, "9520000000033")}), "http://spine.test", 100)
    assert "not a receiver" in str(rejected.value)
