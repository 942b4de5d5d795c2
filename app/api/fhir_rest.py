"""The FHIR RESTful API routes. Each parses the request, calls one service, renders the answer.

Spec: https://hl7.org/fhir/R4/http.html
"""

from __future__ import annotations

from datetime import UTC
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from app.api.auth import RequestAccess
from app.api.deps import AppSettings, BaseUrl, Context, IfMatch, Negotiated, Operations, PreferReturn
from app.api.media import FhirResponse, read_json_body
from app.config import Settings
from app.fhir.bundles import etag
from app.fhir.outcome import ErrorCategory, FhirError, Issue, operation_outcome
from app.fhir.views import subset
from app.services import history as history_service
from app.services import resources, transactions
from app.services import search as search_service
from app.services.operations import OperationCall
from app.services.resources import WriteResult
from app.storage.repository import StoredVersion

__all__ = ["router"]

router = APIRouter(dependencies=[Negotiated])

_JSON_PATCH = frozenset({"application/json-patch+json"})
_FORM = frozenset({"application/x-www-form-urlencoded"})

_RESOURCE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/fhir+json": {
                "schema": {"type": "object", "required": ["resourceType"], "properties": {"resourceType": {"type": "string"}}}
            }
        },
    }
}
_PATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json-patch+json": {
                "schema": {
                    "type": "array",
                    "items": {"type": "object", "required": ["op", "path"], "properties": {"op": {"type": "string"}, "path": {"type": "string"}}},
                }
            }
        },
    }
}
_RESOURCE_SCHEMA = {"type": "object", "required": ["resourceType"], "properties": {"resourceType": {"type": "string"}}}
_FHIR_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"description": "A FHIR resource or Bundle", "content": {"application/fhir+json": {"schema": _RESOURCE_SCHEMA}}},
    "default": {
        "description": "A FHIR resource, or an OperationOutcome for an error",
        "content": {"application/fhir+json": {"schema": _RESOURCE_SCHEMA}},
    },
}
_DELETE_RESPONSE: dict[int | str, dict[str, Any]] = {204: {"description": "Deleted (no body)"}, **_FHIR_RESPONSE}
_READ_RESPONSE: dict[int | str, dict[str, Any]] = {304: {"description": "Not modified (If-None-Match)"}, **_FHIR_RESPONSE}


def _prefers_strict(request: Request) -> bool:
    return "handling=strict" in request.headers.get("prefer", "").replace(" ", "")


def _version_headers(stored: StoredVersion) -> dict[str, str]:
    return {
        "ETag": etag(stored.version),
        "Last-Modified": format_datetime(stored.last_updated.replace(tzinfo=UTC), usegmt=True),
    }


def _read_response(request: Request, stored: StoredVersion) -> Response:
    summary = request.query_params.get("_summary")
    elements = request.query_params.get("_elements")
    body: Any = stored.content
    if summary or elements:
        body = subset(orjson.loads(stored.content or b"{}"), summary, elements.split(",") if elements else None)
    return FhirResponse(body, headers=_version_headers(stored))


def _write_response(result: WriteResult, base_url: str, prefer: str) -> Response:
    stored = result.stored
    status = 201 if result.created else 200
    headers = _version_headers(stored)
    if result.created or result.changed:
        headers["Location"] = f"{base_url}/{stored.type}/{stored.id}/_history/{stored.version}"
    if prefer == "minimal":
        return Response(status_code=status, headers=headers)
    if prefer == "OperationOutcome":
        message = f"{stored.type}/{stored.id} {'created' if result.created else 'updated' if result.changed else 'unchanged'}"
        issues = [Issue("information", "informational", message), *result.issues]
        return FhirResponse(operation_outcome(issues), status, headers)
    return FhirResponse(stored.content, status, headers)


def _deleted_response(prefer: str) -> Response:
    if prefer == "OperationOutcome":
        return FhirResponse(operation_outcome([Issue("information", "informational", "Deleted")]), 200)
    return Response(status_code=204)


@router.get("/metadata", summary="CapabilityStatement", responses=_FHIR_RESPONSE)
async def capabilities(request: Request) -> Response:
    return FhirResponse(request.app.state.capability_statement)


@router.post("/", summary="Batch or transaction Bundle", openapi_extra=_RESOURCE_BODY, responses=_FHIR_RESPONSE)
async def batch_or_transaction(
    request: Request, access: RequestAccess, context: Context, settings: AppSettings, base_url: BaseUrl, prefer: PreferReturn
) -> Response:
    body = await read_json_body(request, settings.max_body_bytes)
    result = await transactions.process_bundle(context, base_url, body, return_resources=prefer == "representation", access=access)
    return FhirResponse(result)


@router.get("/_history", summary="System history", responses=_FHIR_RESPONSE)
async def system_history(request: Request, access: RequestAccess, context: Context, base_url: BaseUrl) -> Response:
    return FhirResponse(await history_service.history(context, base_url, None, None, request.query_params.multi_items(), access))


async def _operation(
    request: Request,
    access: RequestAccess,
    context: Context,
    operations: Operations,
    settings: Settings,
    name: str,
    resource_type: str | None,
    resource_id: str | None,
) -> Response:
    operations.find(name, resource_type, resource_id is not None)  # 404 before the body is read
    body = await read_json_body(request, settings.max_body_bytes) if request.method == "POST" else None
    call = OperationCall(name, resource_type, resource_id, request.method, body, request.query_params.multi_items())
    result = await operations.invoke(context, call, access)
    return FhirResponse(result.resource, result.status)


@router.get("/${operation}", summary="System-level operation", responses=_FHIR_RESPONSE, operation_id="system_operation_get")
@router.post("/${operation}", summary="System-level operation", responses=_FHIR_RESPONSE, operation_id="system_operation_post")
async def system_operation(
    request: Request, operation: str, access: RequestAccess, context: Context, operations: Operations, settings: AppSettings
) -> Response:
    return await _operation(request, access, context, operations, settings, operation, None, None)


@router.get("/{resource_type}", summary="Search", responses=_FHIR_RESPONSE)
async def search(request: Request, resource_type: str, access: RequestAccess, context: Context, base_url: BaseUrl) -> Response:
    params = request.query_params.multi_items()
    return FhirResponse(
        await search_service.search(context, base_url, resource_type, params, strict=_prefers_strict(request), access=access)
    )


@router.post("/{resource_type}/_search", summary="Search with parameters in a form body", responses=_FHIR_RESPONSE)
async def search_by_post(
    request: Request, resource_type: str, access: RequestAccess, context: Context, base_url: BaseUrl, settings: AppSettings
) -> Response:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    form: list[tuple[str, str]] = []
    if content_type in _FORM:
        raw = await request.body()
        if len(raw) > settings.max_body_bytes:
            raise FhirError(ErrorCategory.TOO_LARGE, "The body is too large")
        form = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
    elif content_type:
        await read_json_body(request, settings.max_body_bytes, _FORM)
    params = [*request.query_params.multi_items(), *form]
    return FhirResponse(
        await search_service.search(context, base_url, resource_type, params, strict=_prefers_strict(request), access=access)
    )


@router.get("/{resource_type}/_history", summary="Type history", responses=_FHIR_RESPONSE)
async def type_history(request: Request, resource_type: str, access: RequestAccess, context: Context, base_url: BaseUrl) -> Response:
    params = request.query_params.multi_items()
    return FhirResponse(await history_service.history(context, base_url, resource_type, None, params, access))


@router.post("/{resource_type}", summary="Create (If-None-Exist for conditional create)", openapi_extra=_RESOURCE_BODY, responses=_FHIR_RESPONSE)
async def create(
    request: Request,
    resource_type: str,
    access: RequestAccess,
    context: Context,
    settings: AppSettings,
    base_url: BaseUrl,
    prefer: PreferReturn,
) -> Response:
    body = await read_json_body(request, settings.max_body_bytes)
    result = await resources.create(context, resource_type, body, request.headers.get("if-none-exist"), access)
    return _write_response(result, base_url, prefer)


@router.put("/{resource_type}", summary="Conditional update (criteria in the query)", openapi_extra=_RESOURCE_BODY, responses=_FHIR_RESPONSE)
async def update_conditionally(
    request: Request,
    resource_type: str,
    access: RequestAccess,
    context: Context,
    settings: AppSettings,
    base_url: BaseUrl,
    prefer: PreferReturn,
    if_match: IfMatch,
) -> Response:
    body = await read_json_body(request, settings.max_body_bytes)
    result = await resources.update_conditionally(context, resource_type, request.url.query, body, if_match, access)
    return _write_response(result, base_url, prefer)


@router.delete("/{resource_type}", summary="Conditional delete (criteria in the query)", responses=_DELETE_RESPONSE)
async def delete_conditionally(
    request: Request, resource_type: str, access: RequestAccess, context: Context, prefer: PreferReturn
) -> Response:
    await resources.conditional_delete(context, resource_type, request.url.query, access)
    return _deleted_response(prefer)


@router.get("/{resource_type}/${operation}", summary="Type-level operation", responses=_FHIR_RESPONSE, operation_id="type_operation_get")
@router.post("/{resource_type}/${operation}", summary="Type-level operation", responses=_FHIR_RESPONSE, operation_id="type_operation_post")
async def type_operation(
    request: Request,
    resource_type: str,
    operation: str,
    access: RequestAccess,
    context: Context,
    operations: Operations,
    settings: AppSettings,
) -> Response:
    return await _operation(request, access, context, operations, settings, operation, resource_type, None)


@router.get("/{resource_type}/{resource_id}", summary="Read", responses=_READ_RESPONSE)
async def read(request: Request, resource_type: str, resource_id: str, access: RequestAccess, context: Context) -> Response:
    stored = await resources.read(context, resource_type, resource_id, access)
    if request.headers.get("if-none-match", "").strip() == etag(stored.version):
        return Response(status_code=304, headers=_version_headers(stored))
    return _read_response(request, stored)


@router.put("/{resource_type}/{resource_id}", summary="Update (or create with this id)", openapi_extra=_RESOURCE_BODY, responses=_FHIR_RESPONSE)
async def update(
    request: Request,
    resource_type: str,
    resource_id: str,
    access: RequestAccess,
    context: Context,
    settings: AppSettings,
    base_url: BaseUrl,
    prefer: PreferReturn,
    if_match: IfMatch,
) -> Response:
    body = await read_json_body(request, settings.max_body_bytes)
    result = await resources.update(context, resource_type, resource_id, body, if_match, access)
    return _write_response(result, base_url, prefer)


@router.patch("/{resource_type}/{resource_id}", summary="JSON Patch", openapi_extra=_PATCH_BODY, responses=_FHIR_RESPONSE)
async def patch(
    request: Request,
    resource_type: str,
    resource_id: str,
    access: RequestAccess,
    context: Context,
    settings: AppSettings,
    base_url: BaseUrl,
    prefer: PreferReturn,
    if_match: IfMatch,
) -> Response:
    operations = await read_json_body(request, settings.max_body_bytes, _JSON_PATCH)
    result = await resources.patch(context, resource_type, resource_id, operations, if_match, access)
    return _write_response(result, base_url, prefer)


@router.delete("/{resource_type}/{resource_id}", summary="Delete (logical)", responses=_DELETE_RESPONSE)
async def delete(
    resource_type: str, resource_id: str, access: RequestAccess, context: Context, prefer: PreferReturn, if_match: IfMatch
) -> Response:
    await resources.delete(context, resource_type, resource_id, if_match, access)
    return _deleted_response(prefer)


@router.get(
    "/{resource_type}/{resource_id}/${operation}",
    summary="Instance-level operation",
    responses=_FHIR_RESPONSE,
    operation_id="instance_operation_get",
)
@router.post(
    "/{resource_type}/{resource_id}/${operation}",
    summary="Instance-level operation",
    responses=_FHIR_RESPONSE,
    operation_id="instance_operation_post",
)
async def instance_operation(
    request: Request,
    resource_type: str,
    resource_id: str,
    operation: str,
    access: RequestAccess,
    context: Context,
    operations: Operations,
    settings: AppSettings,
) -> Response:
    return await _operation(request, access, context, operations, settings, operation, resource_type, resource_id)


@router.get("/{resource_type}/{resource_id}/_history", summary="Instance history", responses=_FHIR_RESPONSE)
async def instance_history(
    request: Request, resource_type: str, resource_id: str, access: RequestAccess, context: Context, base_url: BaseUrl
) -> Response:
    params = request.query_params.multi_items()
    return FhirResponse(await history_service.history(context, base_url, resource_type, resource_id, params, access))


@router.get("/{resource_type}/{resource_id}/_history/{version_id}", summary="Version read (vread)", responses=_FHIR_RESPONSE)
async def vread(
    request: Request, resource_type: str, resource_id: str, version_id: str, access: RequestAccess, context: Context
) -> Response:
    return _read_response(request, await resources.vread(context, resource_type, resource_id, version_id, access))


@router.get("/{compartment}/{compartment_id}/{resource_type}", summary="Compartment search (Patient)", responses=_FHIR_RESPONSE)
async def compartment_search(
    request: Request,
    compartment: str,
    compartment_id: str,
    resource_type: str,
    access: RequestAccess,
    context: Context,
    base_url: BaseUrl,
) -> Response:
    params = request.query_params.multi_items()
    found = await search_service.search_compartment(
        context, base_url, compartment, compartment_id, resource_type, params, strict=_prefers_strict(request), access=access
    )
    return FhirResponse(found)
