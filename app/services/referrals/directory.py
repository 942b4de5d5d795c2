"""Looking up the parties of a referral in the store: this server's organisation, an organisation's
messaging Endpoint, the partners allowed to send, and the records that travel with a referral."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from app.fhir.outcome import ErrorCategory, FhirError, Issue
from app.fhir.search_query import parse_search
from app.referral import codes
from app.referral.medcom import Party
from app.referral.payload import travelling_copy
from app.referral.references import local_key, references, rewrite_references
from app.referral.validation import Tie, identifiers_of
from app.security.access import Access
from app.security.compartment import visible
from app.services.context import FhirContext
from app.services.referrals.config import ReferralConfig
from app.storage.repository import StoreSession

__all__ = [
    "CHANNELS",
    "Parties",
    "Partner",
    "Readable",
    "Route",
    "find_by_identifiers",
    "gather",
    "load",
    "own_party",
    "partner_map",
    "readable_by",
    "route_to",
]

CHANNELS = frozenset({"medcom-fhir-message", "zorgdomein-style"})
_MAX_TRAVELLING = 200

# Whether the one a message is sent for may read a resource it would carry.
Readable = Callable[[dict[str, Any]], bool]


def readable_by(context: FhirContext, access: Access) -> Readable:
    """What `access` may read, as `gather` asks it."""
    return lambda resource: visible(context.search_parameters, access, resource)


@dataclass(frozen=True)
class Route:
    """Where messages for an organisation go: its Endpoint's channel and address."""

    channel: str
    party: Party

    @property
    def country(self) -> str:
        return "NL" if self.channel == "zorgdomein-style" else "DK"


async def load(session: StoreSession, reference: str) -> dict[str, Any] | None:
    """The current JSON of a local `Type/id` reference, or None."""
    key = local_key(reference)
    if key is None:
        return None
    stored = await session.current(*key)
    if stored is None or stored.deleted or stored.content is None:
        return None
    result: dict[str, Any] = orjson.loads(stored.content)
    return result


async def _search(session: StoreSession, context: FhirContext, resource_type: str, params: list[tuple[str, str]], count: int) -> list[dict[str, Any]]:
    query = parse_search(resource_type, params, context.search_parameters, default_count=count, max_count=count, strict=True)
    page = await session.search(replace(query, total="none"))
    return [orjson.loads(m.content) for m in page.matches if m.content]


async def find_by_identifiers(session: StoreSession, context: FhirContext, resource_type: str, ties: Iterable[Tie]) -> dict[str, Any] | None:
    """The local resource of that type carrying any of the identifiers (the first by id). One
    look-up in the token index the `identifier` search parameter fills: every message needs a few."""
    found = await session.first_with_token(resource_type, "identifier", sorted(ties))
    return await load(session, f"{resource_type}/{found}") if found else None


async def own_party(session: StoreSession, context: FhirContext, config: ReferralConfig) -> Party:
    """This server's organisation and endpoint; 422 when the deployment has not set them up."""
    if not config.identifiers or not config.endpoint:
        raise FhirError(
            ErrorCategory.INVALID_RESOURCE,
            "This server has no messaging identity: set BACKPATH_ORGANIZATION_IDENTIFIERS and BACKPATH_ENDPOINT",
        )
    organization = await find_by_identifiers(session, context, "Organization", config.identifiers)
    if organization is None:
        raise FhirError(ErrorCategory.INVALID_RESOURCE, "This server's own Organization (BACKPATH_ORGANIZATION_IDENTIFIERS) is not stored")
    return Party(travelling_copy(organization), config.endpoint)


async def route_to(session: StoreSession, context: FhirContext, reference: str) -> Route | None:
    """The messaging route of the organisation behind `reference` (an Organization, or a
    PractitionerRole / HealthcareService and its organisation): the first active Endpoint with a
    referral channel among the resource's own endpoints, its organisation's, or those the
    organisation manages."""
    resource = await load(session, reference)
    if resource is None:
        return None
    kind = resource["resourceType"]
    organization = resource if kind == "Organization" else None
    if kind in ("PractitionerRole", "HealthcareService"):
        owner = (resource.get("organization") or resource.get("providedBy") or {}).get("reference")
        organization = await load(session, owner) if isinstance(owner, str) else None
    if organization is None or organization.get("resourceType") != "Organization":
        return None
    candidates = [e.get("reference") for e in [*resource.get("endpoint", []), *organization.get("endpoint", [])]]
    endpoints = [e for e in [await load(session, c) for c in candidates if isinstance(c, str)] if e]
    if not endpoints:
        endpoints = await _search(session, context, "Endpoint", [("organization", f"Organization/{organization['id']}")], 20)
    for endpoint in endpoints:
        channel = _channel(endpoint)
        if channel and endpoint.get("status") == "active" and endpoint.get("address"):
            return Route(channel, Party(travelling_copy(organization), str(endpoint["address"]).rstrip("/")))
    return None


def _channel(endpoint: dict[str, Any]) -> str | None:
    coding = endpoint.get("connectionType") or {}
    if coding.get("system") == codes.CHANNEL and coding.get("code") in CHANNELS:
        return str(coding["code"])
    return None


@dataclass(frozen=True)
class Partner:
    """A configured partner address and the organisation whose Endpoint has it (None and no
    identifiers when no stored Endpoint vouches for it: then no sender can claim it)."""

    ties: frozenset[Tie]
    organization: dict[str, Any] | None


async def partner_map(session: StoreSession, context: FhirContext, config: ReferralConfig) -> dict[str, Partner]:
    """Allowed partner address → the organisation behind it."""
    partners: dict[str, Partner] = {address: Partner(frozenset(), None) for address in config.partners}
    params = [("connection-type", ",".join(f"{codes.CHANNEL}|{c}" for c in sorted(CHANNELS))), ("status", "active")]
    for endpoint in await _search(session, context, "Endpoint", params, 1000):
        address = str(endpoint.get("address", "")).rstrip("/")
        owner = (endpoint.get("managingOrganization") or {}).get("reference")
        organization = await load(session, owner) if address in partners and isinstance(owner, str) else None
        if organization is not None:
            partners[address] = Partner(partners[address].ties | identifiers_of(organization), travelling_copy(organization))
    return partners


class Parties:
    """This server's own party and its partners, read from the store at most every `ttl` seconds:
    every message needs them, and an Organization or Endpoint change takes effect within `ttl`."""

    def __init__(self, config: ReferralConfig, ttl: float = 5.0) -> None:
        self.config = config
        self.ttl = ttl
        self._read_at = -ttl
        self._value: tuple[Party | None, dict[str, Partner]] = (None, {})

    async def get(self, context: FhirContext) -> tuple[Party | None, dict[str, Partner]]:
        if time.monotonic() - self._read_at >= self.ttl:
            async with context.store.reading() as session:
                try:
                    us: Party | None = await own_party(session, context, self.config)
                except FhirError:  # not set up (yet): messages are answered, not processed
                    us = None
                self._value = (us, await partner_map(session, context, self.config))
            self._read_at = time.monotonic()
        return self._value


async def gather(
    session: StoreSession,
    seeds: Sequence[dict[str, Any]],
    *,
    reply: bool,
    required: Sequence[tuple[int, str]] = (),
    readable: Readable = lambda _resource: True,
) -> tuple[list[dict[str, Any]], list[Issue]]:
    """The travelling copies of `seeds` and of everything they reference, transitively, from the
    store. A reference to something not stored here is removed from the copy (with a warning),
    except the `required` ones — (seed index, element) — which refuse the referral (422); one to
    something the sender may not read refuses it (403): a message must not carry what its sender
    could not see."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    order: list[tuple[str, str]] = []
    for seed in seeds:
        key = (seed["resourceType"], seed["id"])
        found[key] = travelling_copy(seed, reply=reply)
        order.append(key)
    warnings: list[Issue] = []
    missing: set[str] = set()
    queue = list(order)
    while queue:
        current = found[queue.pop(0)]
        for path, reference in references(current):
            target = local_key(reference)
            if target is None or target in found or reference in missing:
                if target is None and not reference.startswith("#"):
                    missing.add(reference)
                continue
            stored = await load(session, reference)
            if stored is None:
                missing.add(reference)
                warnings.append(Issue("warning", "not-found", f"{current['resourceType']}.{path}: {reference} is not stored here and was left out of the message"))
                continue
            if not readable(stored):
                raise FhirError(ErrorCategory.FORBIDDEN, f"{current['resourceType']}.{path}: the access token may not read {reference}, so it cannot travel")
            if len(found) >= _MAX_TRAVELLING:
                raise FhirError(ErrorCategory.INVALID_RESOURCE, f"The referral references more than {_MAX_TRAVELLING} resources")
            found[target] = travelling_copy(stored, reply=reply)
            order.append(target)
            queue.append(target)
    for index, element in required:
        seed = seeds[index]
        value = seed.get(element)
        pointer = (value or [{}])[0] if isinstance(value, list) else value or {}
        named = pointer.get("reference") if isinstance(pointer, dict) else None
        if not isinstance(named, str) or named in missing or local_key(named) not in found:
            raise FhirError(ErrorCategory.INVALID_RESOURCE, f"{seed['resourceType']}.{element} must point at a resource stored here", (f"{seed['resourceType']}.{element}",))

    def keep(reference: str) -> str | None:
        return None if reference in missing else reference

    return [rewrite_references(found[key], keep) for key in order], warnings
