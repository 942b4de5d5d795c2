"""Access checks the use cases share: a stored version or a resource held against the caller's scopes
and, where a scope is limited to one patient, against that patient's compartment."""

from __future__ import annotations

from typing import Any

import orjson

from app.fhir.outcome import ErrorCategory, FhirError
from app.security.access import IMMUTABLE_TYPES, Access, Limit
from app.security.compartment import in_compartment
from app.security.form_link import permitted_task_change
from app.services.context import FhirContext
from app.storage.repository import StoredVersion, StoreSession

__all__ = ["check_change", "check_resource", "check_stored", "refuse_immutable", "visible_stored"]


def check_resource(context: FhirContext, access: Access, resource: dict[str, Any], permission: str) -> None:
    """403 unless `access` may `permission` this resource (as sent, or as it will be stored)."""
    limit = access.require(permission, resource["resourceType"])
    if limit is Limit.COMPARTMENT and not _in_patient_compartment(context, access, resource):
        raise FhirError(ErrorCategory.FORBIDDEN, f"{resource['resourceType']} is not in the compartment of the patient the access token is for")
    if limit is Limit.INSTANCE and not access.names(resource["resourceType"], resource.get("id")):
        raise FhirError(ErrorCategory.FORBIDDEN, f"The form link does not allow access to {resource['resourceType']}/{resource.get('id')}")


def check_stored(context: FhirContext, access: Access, stored: StoredVersion, permission: str) -> None:
    """403 unless `access` may `permission` this stored version."""
    limit = access.require(permission, stored.type)
    if limit is Limit.COMPARTMENT and stored.content is not None and not _in_patient_compartment(context, access, orjson.loads(stored.content)):
        raise FhirError(ErrorCategory.FORBIDDEN, f"{stored.type}/{stored.id} is not in the compartment of the patient the access token is for")
    if limit is Limit.INSTANCE and not access.names(stored.type, stored.id):
        raise FhirError(ErrorCategory.FORBIDDEN, f"The form link does not allow access to {stored.type}/{stored.id}")


def check_change(access: Access, live: StoredVersion | None, resource: dict[str, Any]) -> None:
    """403 when a form link's update does more than complete its Task."""
    if access.form_task is None:
        return
    before = orjson.loads(live.content) if live is not None and live.content else None
    if before is None or not permitted_task_change(before, resource):
        raise FhirError(ErrorCategory.FORBIDDEN, "A form link may only mark its Task completed")


async def visible_stored(session: StoreSession, context: FhirContext, access: Access, stored: StoredVersion, permission: str = "r") -> bool:
    """Whether `access` may see this version; a deletion is judged by the version it deleted."""
    limit = access.limit(permission, stored.type)
    if limit is Limit.INSTANCE:
        return access.names(stored.type, stored.id)
    if limit is not Limit.COMPARTMENT:
        return limit is Limit.ANY
    content = stored.content
    if content is None and stored.version > 1:
        previous = await session.version(stored.type, stored.id, stored.version - 1)
        content = previous.content if previous is not None else None
    return content is not None and _in_patient_compartment(context, access, orjson.loads(content))


def refuse_immutable(resource_type: str, interaction: str) -> None:
    """405 for changing a type the API keeps as written (the audit trail)."""
    if resource_type in IMMUTABLE_TYPES:
        raise FhirError(ErrorCategory.METHOD_NOT_ALLOWED, f"{resource_type} resources cannot be changed by {interaction}: the audit trail is kept as written")


def _in_patient_compartment(context: FhirContext, access: Access, resource: dict[str, Any]) -> bool:
    return access.patient is not None and in_compartment(context.search_parameters, resource, access.patient)
