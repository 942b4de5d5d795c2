"""The CapabilityStatement, generated from what the server really does (interactions, search
parameters the query parser accepts, operations in the registry). Spec:
https://hl7.org/fhir/R4/capabilitystatement.html
"""

from __future__ import annotations

from typing import Any

from app import __version__
from app.fhir.models import RESOURCE_TYPES
from app.fhir.search_query import is_searchable
from app.security.access import IMMUTABLE_TYPES
from app.services.context import FhirContext
from app.services.operations import OperationRegistry

__all__ = ["capability_statement"]

_TYPE_INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create", "search-type"]
# What the API refuses on the audit trail (an update only creates: a PUT of a new id).
_CHANGES = frozenset({"patch", "delete"})


def capability_statement(
    context: FhirContext, operations: OperationRegistry, base_url: str, published: str, security: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The CapabilityStatement; `security` is the `rest.security` section (none in development mode)."""
    resources = [_resource(context, operations, resource_type) for resource_type in sorted(RESOURCE_TYPES)]
    rest: dict[str, Any] = {
        "mode": "server",
        "resource": resources,
        "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
    }
    if security is not None:
        rest["security"] = security
    system_ops = operations.system_operations()
    if system_ops:
        rest["operation"] = [{"name": op.code, "definition": op.definition} for op in system_ops]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": published,
        "publisher": "BackPath",
        "kind": "instance",
        "software": {"name": "BackPath", "version": __version__},
        "implementation": {"description": "BackPath FHIR R4 server", **({"url": base_url} if base_url else {})},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [rest],
    }


def _resource(context: FhirContext, operations: OperationRegistry, resource_type: str) -> dict[str, Any]:
    params = [
        {"name": p.code, "definition": p.url, "type": p.type}
        for p in sorted(context.search_parameters.for_type(resource_type).values(), key=lambda p: p.code)
        if is_searchable(p)
    ]
    immutable = resource_type in IMMUTABLE_TYPES
    entry: dict[str, Any] = {
        "type": resource_type,
        "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
        "interaction": [{"code": code} for code in _TYPE_INTERACTIONS if not (immutable and code in _CHANGES)],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "not-supported",
        "conditionalUpdate": not immutable,
        "conditionalDelete": "not-supported" if immutable else "single",
        "searchParam": params,
    }
    ops = operations.for_type(resource_type)
    if ops:
        entry["operation"] = [{"name": op.code, "definition": op.definition} for op in ops]
    return entry
