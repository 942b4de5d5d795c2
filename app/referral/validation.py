"""Checking an incoming message before anything of it is stored.

Spec: https://hl7.org/fhir/R4/messaging.html, https://hl7.org/fhir/R4/bundle.html#references;
`../shared/referral-standards.md` §2 and §4. A message is refused (`fatal-error`) when it is not a
message Bundle with the MessageHeader first, names an unknown event, is not addressed to this
organisation, holds a reference that resolves to nothing inside it, holds an invalid resource or
unsafe narrative, or comes from an endpoint that is not a configured partner or from a sender that
is not the organisation of that endpoint. Without a MessageHeader id there is nothing to
acknowledge: that is a plain 400.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from app.fhir.models import is_valid_id, validate_resource
from app.fhir.outcome import ErrorCategory, FhirError, Issue
from app.referral import codes
from app.referral.narrative import unsafe_narrative
from app.referral.references import bundle_target, references
from app.referral.workflow import TASK_TRANSITIONS

__all__ = [
    "EVENTS",
    "Message",
    "Rejected",
    "Tie",
    "check_sender",
    "content_hash",
    "header_id_of",
    "identifiers_of",
    "read_message",
]

EVENTS = frozenset({"new-referral", "update-referral", "cancel-referral"})

Tie = tuple[str, str]  # an identifier as (system, value)


class Rejected(Exception):
    """A message that gets a `fatal-error` acknowledgement; nothing of it is stored."""

    def __init__(self, issues: list[Issue], message: Message | None = None) -> None:
        super().__init__("; ".join(i.diagnostics for i in issues))
        self.issues = issues
        self.message = message


def _issue(text: str, where: str) -> Issue:
    return Issue("error", "invalid", text, (where,))


def identifiers_of(resource: dict[str, Any] | None) -> frozenset[Tie]:
    return frozenset(
        (str(i["system"]), str(i["value"]))
        for i in (resource or {}).get("identifier") or []
        if isinstance(i, dict) and i.get("system") and i.get("value")
    )


def content_hash(body: Any) -> str:
    """The same message, however its JSON is laid out, hashes the same (duplicate detection)."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True)
class Message:
    """A message that passed the checks, with its entries by fullUrl."""

    body: dict[str, Any]
    header: dict[str, Any]
    header_url: str
    entries: Mapping[str, dict[str, Any]]
    role: str  # "primary" or "cc": how this organisation is addressed
    sender: dict[str, Any]  # the sender's Organization as the message carries it

    @property
    def id(self) -> str:
        return str(self.header["id"])

    @property
    def event(self) -> str:
        return str(self.header["eventCoding"]["code"])

    @property
    def source_endpoint(self) -> str:
        return str(self.header["source"]["endpoint"])

    @property
    def reason(self) -> str | None:
        for coding in (self.header.get("reason") or {}).get("coding") or []:
            if coding.get("system") == codes.DECISION:
                return str(coding.get("code"))
        return None

    def resolve(self, reference: str, from_url: str | None = None) -> dict[str, Any] | None:
        target = bundle_target(reference, from_url or self.header_url, frozenset(self.entries))
        return self.entries.get(target) if target else None

    def url_of(self, reference: str, from_url: str | None = None) -> str | None:
        """The fullUrl of the entry `reference` points to."""
        return bundle_target(reference, from_url or self.header_url, frozenset(self.entries))

    def focus(self) -> list[dict[str, Any]]:
        found = [self.resolve(f["reference"]) for f in self.header.get("focus") or [] if isinstance(f, dict) and "reference" in f]
        return [f for f in found if f is not None]

    def of_type(self, resource_type: str) -> list[dict[str, Any]]:
        return [r for r in self.entries.values() if r.get("resourceType") == resource_type]


def header_id_of(body: Any) -> str | None:
    """The id of the message's MessageHeader, wherever it is, if it has a valid one."""
    entries = body.get("entry") if isinstance(body, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "MessageHeader":
            header_id = resource.get("id")
            return header_id if isinstance(header_id, str) and is_valid_id(header_id) else None
    return None


def read_message(body: Any, our_identifiers: frozenset[Tie], our_endpoint: str, max_entries: int) -> Message:
    """The checked message; `Rejected` (fatal-error) when it breaks a rule, FhirError 400 when it
    has no MessageHeader id to acknowledge."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise FhirError(ErrorCategory.MALFORMED, "$process-message takes a message Bundle")
    if header_id_of(body) is None:
        raise FhirError(ErrorCategory.MALFORMED, "The message has no MessageHeader with a valid id, so it cannot be acknowledged")
    entries = body.get("entry")
    assert isinstance(entries, list)  # header_id_of found the header in it
    if len(entries) > max_entries:
        raise Rejected([_issue(f"The message has {len(entries)} entries; at most {max_entries} are accepted", "Bundle.entry")])
    problems = [*_envelope_problems(body), *_entry_problems(entries, "Bundle")]
    try:
        validate_resource(body, "Bundle")
    except FhirError as error:
        problems += error.issues
    if problems:
        raise Rejected(problems)
    by_url = {e["fullUrl"]: e["resource"] for e in entries}
    header_url = entries[0]["fullUrl"]
    header = entries[0]["resource"]
    problems += _reference_problems(entries, "Bundle")
    problems += _code_problems(entries, "Bundle")
    event = header.get("eventCoding") or {}
    if event.get("system") == codes.MEDCOM_EVENT and event.get("code") == codes.ACK_EVENT:
        problems.append(_issue("Acknowledgements are answered on the same exchange; an acknowledgement message is not accepted here", "MessageHeader.eventCoding"))
    elif event.get("system") != codes.MESSAGE_EVENT or event.get("code") not in EVENTS:
        problems.append(_issue(f"Unknown event {event.get('system')}#{event.get('code')}", "MessageHeader.eventCoding"))
    sender = _resolved(header.get("sender"), header_url, by_url)
    if sender is None or sender.get("resourceType") != "Organization":
        problems.append(_issue("MessageHeader.sender must be an Organization in the message", "MessageHeader.sender"))
    if not isinstance((header.get("source") or {}).get("endpoint"), str):
        problems.append(_issue("MessageHeader.source.endpoint is required: acknowledgements go there", "MessageHeader.source.endpoint"))
    role, destination_problems = _addressed_role(header, header_url, by_url, our_identifiers, our_endpoint)
    problems += destination_problems
    for index, focus in enumerate(header.get("focus") or []):
        if not isinstance(focus, dict) or _resolved(focus, header_url, by_url) is None:
            problems.append(_issue("Every focus must be a resource in the message", f"MessageHeader.focus[{index}]"))
    if problems:
        raise Rejected(problems)
    assert sender is not None
    return Message(body, header, header_url, by_url, role, sender)


def check_sender(message: Message, partners: Mapping[str, frozenset[Tie]]) -> None:
    """Only a configured partner endpoint may send, and only as the organisation it belongs to."""
    endpoint = message.source_endpoint.rstrip("/")
    if endpoint not in partners:
        raise Rejected([_issue(f"{endpoint} is not a partner endpoint of this server", "MessageHeader.source.endpoint")], message)
    if not identifiers_of(message.sender) & partners[endpoint]:
        raise Rejected(
            [_issue(f"The sender is not the organisation registered for the partner endpoint {endpoint}", "MessageHeader.sender")],
            message,
        )


# Required bindings the R4B models do not check, for the records the workflow reads.
_CODES: dict[tuple[str, str], frozenset[str]] = {
    ("ServiceRequest", "status"): frozenset({"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"}),
    ("ServiceRequest", "intent"): frozenset({"proposal", "plan", "directive", "order", "original-order", "reflex-order", "filler-order", "instance-order", "option"}),
    ("ServiceRequest", "priority"): frozenset({"routine", "urgent", "asap", "stat"}),
    ("Task", "status"): frozenset(TASK_TRANSITIONS),
    ("Task", "priority"): frozenset({"routine", "urgent", "asap", "stat"}),
}


def _code_problems(entries: list[Any], where: str) -> Iterator[Issue]:
    for index, entry in enumerate(entries):
        resource = entry["resource"]
        for (kind, element), allowed in _CODES.items():
            value = resource.get(element)
            if resource.get("resourceType") == kind and value is not None and value not in allowed:
                yield _issue(f"{kind}.{element} '{value}' is not a code of its required value set", f"{where}.entry[{index}].resource.{element}")
        if resource.get("resourceType") == "Bundle" and isinstance(resource.get("entry"), list):
            yield from _code_problems(resource["entry"], f"{where}.entry[{index}].resource")


def _envelope_problems(body: dict[str, Any]) -> Iterator[Issue]:
    if body.get("type") != "message":
        yield _issue("Bundle.type must be 'message'", "Bundle.type")
    if not body.get("timestamp"):
        yield _issue("A message Bundle needs a timestamp", "Bundle.timestamp")
    first = (body["entry"][0] or {}).get("resource") if isinstance(body["entry"][0], dict) else None
    if not isinstance(first, dict) or first.get("resourceType") != "MessageHeader":
        yield _issue("The first entry of a message must be its MessageHeader", "Bundle.entry[0]")


def _entry_problems(entries: list[Any], where: str) -> Iterator[Issue]:
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        at = f"{where}.entry[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            yield _issue("Every entry must hold a resource", at)
            continue
        resource, url = entry["resource"], entry.get("fullUrl")
        if not isinstance(url, str) or not (url.startswith("urn:uuid:") or "://" in url):
            yield _issue("Every entry needs an absolute or urn:uuid fullUrl", f"{at}.fullUrl")
            continue
        if url in seen:
            yield _issue(f"Two entries have the fullUrl {url}", f"{at}.fullUrl")
        seen.add(url)
        if "://" in url:
            tail = url.rstrip("/").split("/")[-2:]
            if tail != [resource.get("resourceType"), resource.get("id")]:
                yield _issue(f"fullUrl {url} does not name this {resource.get('resourceType')}/{resource.get('id')}", f"{at}.fullUrl")
        div = (resource.get("text") or {}).get("div") if isinstance(resource.get("text"), dict) else None
        if isinstance(div, str) and (why := unsafe_narrative(div)):
            yield _issue(why, f"{at}.resource.text.div")
        if resource.get("resourceType") == "Bundle" and isinstance(resource.get("entry"), list):
            yield from _entry_problems(resource["entry"], f"{at}.resource")


def _reference_problems(entries: list[dict[str, Any]], where: str) -> Iterator[Issue]:
    urls = frozenset(e["fullUrl"] for e in entries)
    for index, entry in enumerate(entries):
        resource = entry["resource"]
        if resource.get("resourceType") == "Bundle":  # a document: its references resolve inside it
            if isinstance(resource.get("entry"), list):
                yield from _reference_problems(resource["entry"], f"{where}.entry[{index}].resource")
            continue
        for path, reference in references(resource):
            if reference.startswith("#") or _is_history(resource, path, reference):
                continue
            if bundle_target(reference, entry["fullUrl"], urls) is None:
                yield _issue(f"The reference '{reference}' resolves to nothing in the message", f"{where}.entry[{index}].resource.{path}")


def _is_history(resource: dict[str, Any], path: str, reference: str) -> bool:
    """Provenance of earlier messages points at their MessageHeaders, which are not re-sent."""
    return resource.get("resourceType") == "Provenance" and reference.startswith("MessageHeader/") and path.startswith(("target", "entity"))


def _resolved(reference: Any, from_url: str, by_url: Mapping[str, dict[str, Any]]) -> dict[str, Any] | None:
    if not isinstance(reference, dict) or not isinstance(reference.get("reference"), str):
        return None
    target = bundle_target(reference["reference"], from_url, frozenset(by_url))
    return by_url.get(target) if target else None


def _addressed_role(
    header: dict[str, Any], header_url: str, by_url: Mapping[str, dict[str, Any]], ours: frozenset[Tie], our_endpoint: str
) -> tuple[str, list[Issue]]:
    destinations = header.get("destination") or []
    uses = [_use(d) for d in destinations]
    if uses.count("primary") != 1:
        return "", [_issue("A message has exactly one primary destination", "MessageHeader.destination")]
    for destination, use in zip(destinations, uses, strict=True):
        receiver = _resolved(destination.get("receiver"), header_url, by_url)
        if receiver is None or receiver.get("resourceType") != "Organization":
            return "", [_issue("Every destination.receiver must be an Organization in the message", "MessageHeader.destination.receiver")]
        if identifiers_of(receiver) & ours and str(destination.get("endpoint", "")).rstrip("/") == our_endpoint.rstrip("/"):
            return use, []
    return "", [_issue("This organisation is not a receiver of the message", "MessageHeader.destination")]


def _use(destination: Any) -> str:
    """MedCom's destination-use (primary or cc); a destination without it is primary."""
    extensions = destination.get("extension") if isinstance(destination, dict) else None
    for extension in extensions if isinstance(extensions, list) else []:
        if isinstance(extension, dict) and extension.get("url") == codes.DESTINATION_USE_EXTENSION:
            return str((extension.get("valueCoding") or {}).get("code"))
    return "primary"
