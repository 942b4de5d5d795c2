"""The instance and type interactions of the FHIR REST API: read, vread, create, update, patch, delete.

Spec: https://hl7.org/fhir/R4/http.html. Each interaction has an `*_in` form that works inside a
caller's transaction (used by transaction Bundles) and a form that opens its own, rehearsed (see
`Store.rehearsed`: on SQLite, checking and indexing the resource happen outside the write lock).
`access` is the caller's (the API passes the request's); the default is the server itself.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl

import jsonpatch
import orjson

from app.fhir.models import is_valid_id, require_resource_type, stored_number, validate_resource
from app.fhir.outcome import ErrorCategory, FhirError, Issue
from app.fhir.search_query import SearchQuery, parse_search
from app.security.access import TRUSTED, Access
from app.security.compartment import restrict_search
from app.services.context import FhirContext
from app.services.permissions import check_change, check_resource, check_stored, refuse_immutable
from app.services.stored import same_content, versioned
from app.storage.repository import Create, Delete, StoredVersion, StoreSession, Update

__all__ = [
    "WriteResult",
    "conditional_delete",
    "conditional_delete_in",
    "create",
    "create_in",
    "delete",
    "delete_in",
    "patch",
    "patch_in",
    "read",
    "read_in",
    "update",
    "update_conditionally",
    "update_conditionally_in",
    "update_in",
    "vread",
]


@dataclass(frozen=True)
class WriteResult:
    """The stored version a write produced or found, and whether the write created the resource."""

    stored: StoredVersion
    created: bool
    changed: bool = True
    issues: tuple[Issue, ...] = ()  # warnings from the write hooks


def _require_id(resource_id: str) -> str:
    if not is_valid_id(resource_id):
        raise FhirError(ErrorCategory.MALFORMED, f"'{resource_id}' is not a valid resource id")
    return resource_id


async def read(context: FhirContext, resource_type: str, resource_id: str, access: Access = TRUSTED) -> StoredVersion:
    access.require("r", resource_type)
    async with context.store.reading() as session:
        stored = await read_in(session, resource_type, resource_id)
    check_stored(context, access, stored, "r")
    return stored


async def read_in(session: StoreSession, resource_type: str, resource_id: str) -> StoredVersion:
    """The current version; 404 when never created, 410 when deleted."""
    require_resource_type(resource_type)
    stored = await session.current(resource_type, _require_id(resource_id))
    if stored is None:
        raise FhirError(ErrorCategory.NOT_FOUND, f"{resource_type}/{resource_id} is not known")
    if stored.deleted:
        raise FhirError(ErrorCategory.GONE, f"{resource_type}/{resource_id} was deleted")
    return stored


async def vread(
    context: FhirContext, resource_type: str, resource_id: str, version_id: str, access: Access = TRUSTED
) -> StoredVersion:
    """One version; 404 when that version never existed, 410 when it is a deletion."""
    require_resource_type(resource_type)
    access.require("r", resource_type)
    version = stored_number(version_id)
    if version is None:
        raise FhirError(ErrorCategory.NOT_FOUND, f"{resource_type}/{resource_id} has no version '{version_id}'")
    async with context.store.reading() as session:
        stored = await session.version(resource_type, _require_id(resource_id), version)
    if stored is None:
        raise FhirError(ErrorCategory.NOT_FOUND, f"{resource_type}/{resource_id} has no version {version_id}")
    if stored.deleted:
        raise FhirError(ErrorCategory.GONE, f"Version {version_id} of {resource_type}/{resource_id} is a deletion")
    check_stored(context, access, stored, "r")
    return stored


async def create(
    context: FhirContext, resource_type: str, body: Any, if_none_exist: str | None = None, access: Access = TRUSTED
) -> WriteResult:
    return await context.store.rehearsed(lambda session: create_in(session, context, resource_type, body, if_none_exist, access=access))


async def create_in(
    session: StoreSession,
    context: FhirContext,
    resource_type: str,
    body: Any,
    if_none_exist: str | None = None,
    resource_id: str | None = None,
    access: Access = TRUSTED,
) -> WriteResult:
    """Create with a server-assigned id (any id in the body is ignored, as the spec says).

    With `If-None-Exist`, an existing single match is returned instead and nothing is written.
    A transaction passes the `resource_id` it assigned up front so references can point to it.
    """
    require_resource_type(resource_type)
    access.require("c", resource_type)
    resource = validate_resource(body, resource_type)
    if if_none_exist:
        query = conditional_query(context, resource_type, if_none_exist, access, "c")
        await session.lock(f"{resource_type}?{if_none_exist}")
        matches = await _matches(session, query)
        if len(matches) == 1:
            return WriteResult(matches[0], created=False, changed=False)
        if len(matches) > 1:
            raise FhirError(ErrorCategory.MULTIPLE_MATCHES, f"If-None-Exist matches {len(matches)} resources")
    resource_id = resource_id or context.new_id()
    check_resource(context, access, {**resource, "id": resource_id}, "c")
    hooked = await context.run_write_hooks(session, {**resource, "id": resource_id}, None, access)
    now = context.clock()
    content, index = versioned(context, hooked.resource, resource_id, 1, now)
    await session.apply(Create(resource_type, resource_id, content, now, index))
    stored = StoredVersion(resource_type, resource_id, 1, now, False, content, "POST")
    return WriteResult(stored, created=True, issues=hooked.issues)


async def update(
    context: FhirContext, resource_type: str, resource_id: str, body: Any, if_match: int | None = None, access: Access = TRUSTED
) -> WriteResult:
    return await context.store.rehearsed(lambda session: update_in(session, context, resource_type, resource_id, body, if_match, access=access))


async def update_in(
    session: StoreSession,
    context: FhirContext,
    resource_type: str,
    resource_id: str,
    body: Any,
    if_match: int | None = None,
    method: str = "PUT",
    access: Access = TRUSTED,
) -> WriteResult:
    """Replace the resource (or create it with this id); `if_match` guards against a stale version.

    A body equal to the current version (apart from meta.versionId/lastUpdated) writes nothing, as
    HAPI FHIR does, so re-sending the same resource never grows its history.
    """
    require_resource_type(resource_type)
    _require_id(resource_id)
    access.require("u", resource_type)
    resource = validate_resource(body, resource_type)
    if resource.get("id") != resource_id:
        raise FhirError(
            ErrorCategory.MALFORMED,
            f"The resource id '{resource.get('id')}' does not match the URL id '{resource_id}'",
            ("id",),
        )
    current = await session.current(resource_type, resource_id)
    live = current if current is not None and not current.deleted else None
    if live is not None:
        check_stored(context, access, live, "u")
    check_resource(context, access, resource, "u")
    check_change(access, live, resource)
    current_version = current.version if current is not None else 0
    _check_if_match(if_match, current_version, resource_type, resource_id)
    hooked = await context.run_write_hooks(session, resource, live, access)
    resource = hooked.resource
    if live is not None and same_content(live.content, resource):
        # no new version for an identical body
        return WriteResult(live, created=False, changed=False, issues=hooked.issues)
    if live is not None:  # a new id may be PUT (loading a trail kept elsewhere); a stored event never changes
        refuse_immutable(resource_type, "update")
    now = context.clock()
    version = current_version + 1
    content, index = versioned(context, resource, resource_id, version, now)
    await session.apply(Update(resource_type, resource_id, current_version, content, now, index, method))
    stored = StoredVersion(resource_type, resource_id, version, now, False, content, method)
    return WriteResult(stored, created=live is None, issues=hooked.issues)  # re-creating a deleted one is a create, as in HAPI


async def update_conditionally(
    context: FhirContext, resource_type: str, criteria: str, body: Any, if_match: int | None = None, access: Access = TRUSTED
) -> WriteResult:
    return await context.store.rehearsed(lambda session: update_conditionally_in(session, context, resource_type, criteria, body, if_match, access=access))


async def update_conditionally_in(
    session: StoreSession,
    context: FhirContext,
    resource_type: str,
    criteria: str,
    body: Any,
    if_match: int | None = None,
    access: Access = TRUSTED,
) -> WriteResult:
    """PUT Type?criteria: update the one match, create when none, 412 when several."""
    require_resource_type(resource_type)
    query = conditional_query(context, resource_type, criteria, access, "u")
    await session.lock(f"{resource_type}?{criteria}")
    matches = await _matches(session, query)
    if len(matches) > 1:
        raise FhirError(ErrorCategory.MULTIPLE_MATCHES, f"The criteria match {len(matches)} resources")
    resource = validate_resource(body, resource_type)
    if matches:
        target = matches[0].id
        if resource.get("id") not in (None, target):
            raise FhirError(ErrorCategory.MALFORMED, "The resource id does not match the resource the criteria found")
    else:
        target = resource.get("id") or context.new_id()
    return await update_in(session, context, resource_type, target, {**resource, "id": target}, if_match, access=access)


async def patch(
    context: FhirContext, resource_type: str, resource_id: str, operations: Any, if_match: int | None = None, access: Access = TRUSTED
) -> WriteResult:
    return await context.store.rehearsed(lambda session: patch_in(session, context, resource_type, resource_id, operations, if_match, access=access))


async def patch_in(
    session: StoreSession,
    context: FhirContext,
    resource_type: str,
    resource_id: str,
    operations: Any,
    if_match: int | None = None,
    access: Access = TRUSTED,
) -> WriteResult:
    """Apply a JSON Patch (RFC 6902) to the current version and store the result as a new version."""
    refuse_immutable(resource_type, "patch")
    access.require("u", resource_type)
    current = await read_in(session, resource_type, resource_id)
    check_stored(context, access, current, "u")
    _check_if_match(if_match, current.version, resource_type, resource_id)
    if not isinstance(operations, list):
        raise FhirError(ErrorCategory.MALFORMED, "A JSON Patch body is an array of operations")
    try:
        patched = jsonpatch.JsonPatch(operations).apply(orjson.loads(current.content or b"{}"))
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, ValueError, KeyError) as error:
        raise FhirError(ErrorCategory.INVALID_RESOURCE, f"The patch cannot be applied: {error}") from None
    if not isinstance(patched, dict) or patched.get("resourceType") != resource_type or patched.get("id") != resource_id:
        raise FhirError(ErrorCategory.INVALID_RESOURCE, "A patch may not change the resource type or id")
    return await update_in(session, context, resource_type, resource_id, patched, current.version, method="PATCH", access=access)


async def delete(
    context: FhirContext, resource_type: str, resource_id: str, if_match: int | None = None, access: Access = TRUSTED
) -> StoredVersion | None:
    return await context.store.rehearsed(lambda session: delete_in(session, context, resource_type, resource_id, if_match, access=access))


async def delete_in(
    session: StoreSession,
    context: FhirContext,
    resource_type: str,
    resource_id: str,
    if_match: int | None = None,
    access: Access = TRUSTED,
) -> StoredVersion | None:
    """Logical delete: a new version marks it deleted; deleting again or an unknown id changes nothing."""
    require_resource_type(resource_type)
    refuse_immutable(resource_type, "delete")
    access.require("d", resource_type)
    current = await session.current(resource_type, _require_id(resource_id))
    if current is None or current.deleted:
        return None
    check_stored(context, access, current, "d")
    _check_if_match(if_match, current.version, resource_type, resource_id)
    now = context.clock()
    await session.apply(Delete(resource_type, resource_id, current.version, now))
    return StoredVersion(resource_type, resource_id, current.version + 1, now, True, None, "DELETE")


async def conditional_delete(context: FhirContext, resource_type: str, criteria: str, access: Access = TRUSTED) -> StoredVersion | None:
    return await context.store.rehearsed(lambda session: conditional_delete_in(session, context, resource_type, criteria, access=access))


async def conditional_delete_in(
    session: StoreSession, context: FhirContext, resource_type: str, criteria: str, access: Access = TRUSTED
) -> StoredVersion | None:
    """DELETE Type?criteria: delete the one match; none is fine; several is 412 (as HAPI by default)."""
    require_resource_type(resource_type)
    refuse_immutable(resource_type, "delete")
    matches = await _matches(session, conditional_query(context, resource_type, criteria, access, "d"))
    if len(matches) > 1:
        raise FhirError(ErrorCategory.MULTIPLE_MATCHES, f"The criteria match {len(matches)} resources")
    if not matches:
        return None
    return await delete_in(session, context, resource_type, matches[0].id, access=access)


def conditional_query(
    context: FhirContext, resource_type: str, criteria: str, access: Access = TRUSTED, permission: str = "s"
) -> SearchQuery:
    """Criteria of a conditional interaction; unknown parameters are an error, never ignored. The
    matches are limited to what `access` may reach with `permission` (the interaction's own)."""
    params = parse_qsl(criteria.lstrip("?"), keep_blank_values=True)
    if not params:
        raise FhirError(ErrorCategory.INVALID_PARAMETER, "Conditional criteria are empty")
    query = parse_search(resource_type, params, context.search_parameters, default_count=2, max_count=2, strict=True)
    return restrict_search(query, access, permission)


async def _matches(session: StoreSession, query: SearchQuery) -> list[StoredVersion]:
    page = await session.search(replace(query, count=2, total="none"))
    return page.matches


def _check_if_match(if_match: int | None, current_version: int, resource_type: str, resource_id: str) -> None:
    if if_match is not None and if_match != current_version:
        raise FhirError(
            ErrorCategory.PRECONDITION_FAILED,
            f"If-Match names version {if_match} but {resource_type}/{resource_id} is at version {current_version}",
        )
