"""The data of a CDS Hooks call. Spec: https://cds-hooks.hl7.org/2.0/#providing-fhir-resources-to-a-cds-service

Each prefetch key of the service is taken, in this order, from the request's `prefetch`; else from
the client's `fhirServer` — the rendered template fetched with httpx and the `fhirAuthorization`
bearer token, a short timeout and a size limit, all keys at once; else, when `fhirServer` is this
very server, from the own store (the pathway facts through `$apply`'s own data gathering, the rest
through search). A required key still missing then makes the call a 412. What was supplied or
fetched is model-checked like `$apply` data: a resource that is not valid R4 is refused (422).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from app.cds.discovery import CdsService, Prefetch, PrefetchRole
from app.cds.hooks import HookRequest
from app.cds.prefetch import PrefetchError, Query, prefetch_resources, render_template
from app.fhir.outcome import ErrorCategory, FhirError, Issue
from app.pathway.parameters import lenient_check
from app.security.access import DEVELOPMENT, TRUSTED, Access
from app.services.context import FhirContext
from app.services.search import search_in

__all__ = ["DataSources", "SubjectData", "stored_matches", "subject_data"]

_FHIR_JSON = "application/fhir+json"


@dataclass(frozen=True)
class DataSources:
    """How far the service may reach for data: the fetch timeout, the largest answer read, and
    whether a fhirServer may be plain http (development only)."""

    timeout: float
    max_bytes: int
    allow_http: bool


@dataclass(frozen=True)
class SubjectData:
    """The call's data by what it is for; `own_store`: the pathway reads the facts from this server."""

    patient: dict[str, Any] | None
    facts: tuple[dict[str, Any], ...] = ()
    open_requests: tuple[dict[str, Any], ...] = ()
    conditions: tuple[dict[str, Any], ...] = ()
    own_store: bool = False
    warnings: tuple[Issue, ...] = ()
    access: Access = TRUSTED  # what reads of this server's records hold to (own_store)


# Turns the `fhirAuthorization` access token of a call into what it may read on this server; None
# when the server runs without authentication (development mode).
TokenVerifier = Callable[[str], Awaitable[Access]]


async def subject_data(
    context: FhirContext, sources: DataSources, service: CdsService, request: HookRequest, own_base: str, verifier: TokenVerifier | None = None
) -> SubjectData:
    """The call's data: the prefetch, then what is missing from the client's fhirServer. When that
    is this server, its records are read as the `fhirAuthorization` token allows (`verifier`), as
    any FHIR client's would be; without authentication (development mode) in full."""
    found: dict[PrefetchRole, list[dict[str, Any]]] = {role: [] for role in PrefetchRole}
    missing: list[Prefetch] = []
    for prefetch in service.prefetch:
        resources = _supplied(request, prefetch)
        if resources is None:
            missing.append(prefetch)
        else:
            found[prefetch.role] += resources
    own_store = request.fhir_server is not None and _same_server(request.fhir_server, own_base)
    problem = ""
    access = TRUSTED
    if own_store:
        access = await _own_store_access(request, verifier)
    if missing and own_store:
        for prefetch in missing:
            if prefetch.role in (PrefetchRole.OPEN_REQUESTS, PrefetchRole.CONDITIONS):
                query = _query(prefetch, request)
                found[prefetch.role] += await stored_matches(context, own_base, query.resource_type, query.params, access)
        missing = []  # the Patient and the facts: `$apply` reads them itself (useServerData)
    elif missing and request.fhir_server is not None:
        fetched, problem = await _fetched(sources, request, missing)
        for prefetch, resources in zip(missing, fetched, strict=True):
            if resources is not None:
                found[prefetch.role] += resources
        missing = [p for p, resources in zip(missing, fetched, strict=True) if resources is None]
    unavailable = [p.key for p in missing if p.required]
    if unavailable:
        how = problem or ("no fhirServer was given" if request.fhir_server is None else "the fhirServer did not give them")
        raise FhirError(
            ErrorCategory.DATA_UNAVAILABLE,
            f"The data of prefetch {', '.join(unavailable)} is missing and cannot be fetched: {how}",
            tuple(f"prefetch.{key}" for key in unavailable),
        )
    patient = next((r for r in found[PrefetchRole.PATIENT] if r.get("resourceType") == "Patient" and r.get("id") == request.patient_id), None)
    if patient is None and not own_store:
        raise FhirError(ErrorCategory.DATA_UNAVAILABLE, f"Patient/{request.patient_id} is neither in the prefetch nor on the fhirServer", ("prefetch.patient",))
    checked = [r for r in (patient, *found[PrefetchRole.FACTS], *found[PrefetchRole.OPEN_REQUESTS], *found[PrefetchRole.CONDITIONS]) if r]
    warnings = lenient_check({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in checked]}, "prefetch")
    return SubjectData(
        patient,
        tuple(found[PrefetchRole.FACTS]),
        tuple(found[PrefetchRole.OPEN_REQUESTS]),
        tuple(found[PrefetchRole.CONDITIONS]),
        own_store,
        tuple(warnings),
        access,
    )


async def _own_store_access(request: HookRequest, verifier: TokenVerifier | None) -> Access:
    if verifier is None:
        return DEVELOPMENT
    if request.access_token is None:
        raise FhirError(
            ErrorCategory.DATA_UNAVAILABLE,
            "Reading this server's records needs fhirAuthorization with an access token for this server",
            ("fhirAuthorization",),
        )
    return await verifier(request.access_token)


def _supplied(request: HookRequest, prefetch: Prefetch) -> list[dict[str, Any]] | None:
    if prefetch.key not in request.prefetch:
        return None
    try:
        return prefetch_resources(request.prefetch[prefetch.key], prefetch.key)
    except PrefetchError as error:
        raise FhirError(ErrorCategory.INVALID_PARAMETER, str(error), (f"prefetch.{prefetch.key}",)) from None


def _query(prefetch: Prefetch, request: HookRequest) -> Query:
    try:
        return render_template(prefetch.template, request.context)
    except PrefetchError as error:
        raise FhirError(ErrorCategory.INVALID_PARAMETER, str(error), ("context",)) from None


async def stored_matches(
    context: FhirContext, base_url: str, resource_type: str, params: Sequence[tuple[str, str]], access: Access = TRUSTED
) -> list[dict[str, Any]]:
    """The resources of this server that match a search (its first page) within `access`, as plain JSON."""
    async with context.store.reading() as session:
        bundle = orjson.loads(orjson.dumps(await search_in(session, context, base_url, resource_type, list(params), access=access)))
    return [e["resource"] for e in bundle.get("entry") or [] if (e.get("search") or {}).get("mode") == "match"]


async def _fetched(sources: DataSources, request: HookRequest, missing: Sequence[Prefetch]) -> tuple[list[list[dict[str, Any]] | None], str]:
    """What the client's fhirServer answers to each missing template (None: nothing usable), and why
    nothing could be asked at all."""
    base = str(request.fhir_server)
    if urlsplit(base).scheme != "https" and not sources.allow_http:
        return [None] * len(missing), "the fhirServer must be https"
    headers = {"Accept": _FHIR_JSON}
    if request.access_token:
        headers["Authorization"] = f"Bearer {request.access_token}"
    async with httpx.AsyncClient(base_url=base + "/", timeout=sources.timeout, headers=headers) as client:
        answers = await asyncio.gather(*(_fetch(client, _query(p, request), p.key, sources.max_bytes) for p in missing))
    return list(answers), ""


async def _fetch(client: httpx.AsyncClient, query: Query, key: str, max_bytes: int) -> list[dict[str, Any]] | None:
    try:
        async with client.stream("GET", query.path(), params=list(query.params)) as response:
            if response.status_code in (404, 410) and query.resource_id:
                return []  # the server says the resource is not there: no data
            if response.status_code != 200:
                return None
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    return None
    except httpx.HTTPError:
        return None
    try:
        return prefetch_resources(orjson.loads(body), key)
    except (orjson.JSONDecodeError, PrefetchError):
        return None


def _same_server(fhir_server: str, own_base: str) -> bool:
    def normal(url: str) -> tuple[str, str, str]:
        parts = urlsplit(url.rstrip("/"))
        return parts.scheme.lower(), parts.netloc.lower(), parts.path

    return normal(fhir_server) == normal(own_base)
