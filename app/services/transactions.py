"""Batch and transaction Bundles at `POST /`. Spec: https://hl7.org/fhir/R4/http.html#transaction

A transaction runs in one database transaction in the spec's order (DELETE, POST, PUT/PATCH, GET),
with ids assigned up front so `urn:uuid:` references and conditional references can be rewritten
before anything is written; any failure rolls the whole Bundle back. A batch runs each entry on its
own and reports each outcome. Every entry is held to the caller's `access` as the same interaction
on its own would be; a refused entry fails a transaction whole.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from app.fhir.bundles import bundle, etag, status_line
from app.fhir.models import RESOURCE_TYPES, is_valid_id, stored_number
from app.fhir.outcome import ErrorCategory, FhirError
from app.fhir.search_query import SearchQuery
from app.security.access import TRUSTED, Access
from app.services import resources
from app.services.context import FhirContext
from app.services.permissions import check_stored
from app.services.search import search_in
from app.services.stored import format_instant
from app.storage.repository import StoredVersion, StoreSession

__all__ = ["process_bundle"]

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


@dataclass(frozen=True)
class _Entry:
    index: int
    method: str
    path: str  # "Type", "Type/id", "Type/id/_history/v", without the query
    query: str
    full_url: str | None
    resource: Any
    if_match: int | None
    if_none_exist: str | None


async def process_bundle(
    context: FhirContext, base_url: str, body: Any, *, return_resources: bool, access: Access = TRUSTED
) -> dict[str, Any]:
    """Process a batch or transaction Bundle and return the response Bundle."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise FhirError(ErrorCategory.MALFORMED, "POST / takes a Bundle")
    kind = body.get("type")
    if kind not in ("batch", "transaction"):
        raise FhirError(ErrorCategory.MALFORMED, "The Bundle type must be batch or transaction", ("Bundle.type",))
    raw_entries = body.get("entry", [])
    if not isinstance(raw_entries, list):
        raise FhirError(ErrorCategory.MALFORMED, "Bundle.entry must be an array", ("Bundle.entry",))
    if kind == "transaction":
        entries = [_parse_entry(i, e, base_url) for i, e in enumerate(raw_entries)]
        return await _transaction(context, base_url, entries, return_resources, access)
    return await _batch(context, base_url, raw_entries, return_resources, access)


async def _transaction(
    context: FhirContext, base_url: str, entries: list[_Entry], return_resources: bool, access: Access
) -> dict[str, Any]:
    responses: dict[int, dict[str, Any]] = {}
    async with context.store.writing() as session:
        ids = await _assign_ids(session, context, entries, access)
        for entry in sorted(entries, key=lambda e: (_ORDER[e.method], e.index)):
            try:
                resource = await _rewrite_references(session, context, entry.resource, ids, access)
                responses[entry.index] = await _execute(session, context, base_url, entry, resource, ids, return_resources, access)
            except FhirError as error:
                raise _at_entry(error, entry.index) from None
    return bundle("transaction-response", [responses[i] for i in range(len(entries))])


async def _batch(
    context: FhirContext, base_url: str, raw_entries: list[Any], return_resources: bool, access: Access
) -> dict[str, Any]:
    responses = []
    for index, raw in enumerate(raw_entries):
        try:
            entry = _parse_entry(index, raw, base_url)
            async with context.store.writing() as session:
                responses.append(await _execute(session, context, base_url, entry, entry.resource, {}, return_resources, access))
        except FhirError as error:
            responses.append({"response": {"status": status_line(error.status), "outcome": error.outcome()}})
    return bundle("batch-response", responses)


def _at_entry(error: FhirError, index: int) -> FhirError:
    """The same error, its issues located at the failing entry."""
    where = (f"Bundle.entry[{index}]",)
    issues = [issue if issue.expression else replace(issue, expression=where) for issue in error.issues]
    return FhirError(error.category, error.diagnostics, where, issues)


def _parse_entry(index: int, raw: Any, base_url: str) -> _Entry:
    where = f"Bundle.entry[{index}]"
    request = raw.get("request") if isinstance(raw, dict) else None
    if not isinstance(request, dict) or not isinstance(request.get("url"), str):
        raise FhirError(ErrorCategory.MALFORMED, f"{where} has no request.url", (where,))
    method = request.get("method")
    if method not in _ORDER:
        raise FhirError(ErrorCategory.MALFORMED, f"{where} has an unknown request.method '{method}'", (where,))
    url = request["url"]
    if url.startswith(base_url + "/"):
        url = url[len(base_url) + 1 :]
    split = urlsplit(url)
    path = split.path.strip("/")
    resource = raw.get("resource")
    if method in ("POST", "PUT") and not isinstance(resource, dict):
        raise FhirError(ErrorCategory.MALFORMED, f"{where} needs a resource for {method}", (where,))
    if method == "PATCH":
        resource = _patch_body(resource, where)
    if_match = request.get("ifMatch")
    return _Entry(
        index=index,
        method=method,
        path=path,
        query=split.query,
        full_url=raw.get("fullUrl"),
        resource=resource,
        if_match=_version_of(if_match) if if_match else None,
        if_none_exist=request.get("ifNoneExist"),
    )


def _patch_body(resource: Any, where: str) -> Any:
    """A PATCH entry carries its JSON Patch as a Binary (R4 has no other way to put it in a Bundle)."""
    if isinstance(resource, dict) and resource.get("resourceType") == "Binary" and resource.get("data"):
        try:
            return orjson.loads(base64.b64decode(resource["data"]))
        except (ValueError, orjson.JSONDecodeError):
            raise FhirError(ErrorCategory.MALFORMED, f"{where} has a Binary that is not a JSON Patch", (where,)) from None
    raise FhirError(ErrorCategory.MALFORMED, f"{where}: a PATCH entry needs a Binary holding the JSON Patch", (where,))


def _version_of(tag: str) -> int:
    version = stored_number(tag.strip().removeprefix("W/").strip('"'))
    if version is None:
        raise FhirError(ErrorCategory.MALFORMED, f"'{tag}' is not a version ETag")
    return version


async def _assign_ids(session: StoreSession, context: FhirContext, entries: list[_Entry], access: Access) -> dict[str, str]:
    """fullUrl → "Type/id" for every entry that creates or names a resource, before anything is written."""
    ids: dict[str, str] = {}
    for entry in entries:
        if not entry.full_url:
            continue
        resource_type = entry.path.split("/")[0]
        if entry.method == "POST":
            target = context.new_id()
            if entry.if_none_exist:
                query = resources.conditional_query(context, resource_type, entry.if_none_exist, access, "c")
                page = await session.search(_first_two(query))
                if len(page.matches) == 1:
                    target = page.matches[0].id
            ids[entry.full_url] = f"{resource_type}/{target}"
        elif entry.method == "PUT" and "/" in entry.path:
            ids[entry.full_url] = entry.path
    return ids


def _first_two(query: SearchQuery) -> SearchQuery:
    return replace(query, count=2, total="none")


async def _rewrite_references(session: StoreSession, context: FhirContext, resource: Any, ids: dict[str, str], access: Access) -> Any:
    """Point references at the ids assigned in this transaction and resolve conditional references
    (among what `access` may search: another patient's resource is never found)."""
    if isinstance(resource, dict):
        rewritten = {}
        for key, value in resource.items():
            if key == "reference" and isinstance(value, str):
                rewritten[key] = await _resolve(session, context, value, ids, access)
            else:
                rewritten[key] = await _rewrite_references(session, context, value, ids, access)
        return rewritten
    if isinstance(resource, list):
        return [await _rewrite_references(session, context, item, ids, access) for item in resource]
    return resource


async def _resolve(session: StoreSession, context: FhirContext, reference: str, ids: dict[str, str], access: Access) -> str:
    if reference in ids:
        return ids[reference]
    resource_type, _, criteria = reference.partition("?")
    if criteria and resource_type in RESOURCE_TYPES:
        query = resources.conditional_query(context, resource_type, criteria, access)
        page = await session.search(_first_two(query))
        if len(page.matches) != 1:
            category = ErrorCategory.MULTIPLE_MATCHES if page.matches else ErrorCategory.PRECONDITION_FAILED
            raise FhirError(category, f"The conditional reference '{reference}' matches {len(page.matches)} resources")
        return f"{resource_type}/{page.matches[0].id}"
    return reference


async def _execute(
    session: StoreSession,
    context: FhirContext,
    base_url: str,
    entry: _Entry,
    resource: Any,
    ids: dict[str, str],
    return_resources: bool,
    access: Access,
) -> dict[str, Any]:
    parts = entry.path.split("/") if entry.path else []
    if not parts or parts[0] not in RESOURCE_TYPES:
        raise FhirError(ErrorCategory.NOT_FOUND, f"'{entry.path}' names no known resource type")
    resource_type = parts[0]
    resource_id = parts[1] if len(parts) > 1 else None
    if resource_id is not None and not is_valid_id(resource_id):
        raise FhirError(ErrorCategory.MALFORMED, f"'{resource_id}' is not a valid resource id")
    handlers: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {}

    async def post() -> dict[str, Any]:
        assigned = ids.get(entry.full_url or "", "").partition("/")[2] or None
        result = await resources.create_in(session, context, resource_type, resource, entry.if_none_exist, assigned, access=access)
        return _write_response(result.stored, 201 if result.created else 200, return_resources)

    async def put() -> dict[str, Any]:
        if resource_id is None:
            result = await resources.update_conditionally_in(
                session, context, resource_type, entry.query, resource, entry.if_match, access=access
            )
        else:
            result = await resources.update_in(session, context, resource_type, resource_id, resource, entry.if_match, access=access)
        return _write_response(result.stored, 201 if result.created else 200, return_resources)

    async def patch() -> dict[str, Any]:
        if resource_id is None:
            raise FhirError(ErrorCategory.MALFORMED, "PATCH needs Type/id")
        result = await resources.patch_in(session, context, resource_type, resource_id, resource, entry.if_match, access=access)
        return _write_response(result.stored, 200, return_resources)

    async def delete() -> dict[str, Any]:
        if resource_id is None:
            await resources.conditional_delete_in(session, context, resource_type, entry.query, access=access)
        else:
            await resources.delete_in(session, context, resource_type, resource_id, entry.if_match, access=access)
        return {"response": {"status": status_line(204)}}

    async def get() -> dict[str, Any]:
        if resource_id is None:
            found = await search_in(session, context, base_url, resource_type, parse_qsl(entry.query), access=access)
            return {"resource": found, "response": {"status": status_line(200)}}
        access.require("r", resource_type)
        if len(parts) == 4 and parts[2] == "_history":
            stored = await session.version(resource_type, resource_id, stored_number(parts[3]) or -1)
            if stored is None or stored.deleted:
                raise FhirError(ErrorCategory.NOT_FOUND, f"{entry.path} is not known")
        else:
            stored = await resources.read_in(session, resource_type, resource_id)
        check_stored(context, access, stored, "r")
        return _write_response(stored, 200, True)

    handlers.update(POST=post, PUT=put, PATCH=patch, DELETE=delete, GET=get, HEAD=get)
    return await handlers[entry.method]()


def _write_response(stored: StoredVersion, status: int, with_resource: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "response": {
            "status": status_line(status),
            "location": f"{stored.type}/{stored.id}/_history/{stored.version}",
            "etag": etag(stored.version),
            "lastModified": format_instant(stored.last_updated),
        }
    }
    if with_resource and stored.content is not None:
        entry = {"resource": orjson.Fragment(stored.content), **entry}
    return entry
