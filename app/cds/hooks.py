"""The CDS Hooks request, read and checked. Spec: https://cds-hooks.hl7.org/2.0/#http-request and the
hook definitions patient-view, order-select and order-sign 1.0 (https://cds-hooks.org/hooks/).

A request that breaks the spec is a 400 OperationOutcome naming the field. Extensions BackPath reads
(`extension` of the request, reverse-domain names as the spec recommends):
`dev.backpath.pathway` — the id of the regional PlanDefinition to apply instead of the deployment's;
`dev.backpath.language` — the language of the texts (BCP 47), instead of the Accept-Language header.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.cds.discovery import CdsService
from app.fhir.outcome import ErrorCategory, FhirError

__all__ = ["LANGUAGE_EXTENSION", "PATHWAY_EXTENSION", "HookRequest", "parse_hook_request"]

PATHWAY_EXTENSION = "dev.backpath.pathway"
LANGUAGE_EXTENSION = "dev.backpath.language"

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_USER = re.compile(r"(Practitioner|PractitionerRole|Patient|RelatedPerson)/[A-Za-z0-9\-.]{1,64}")
_LANGUAGE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*")
_ORDER_HOOKS = frozenset({"order-select", "order-sign"})


@dataclass(frozen=True)
class HookRequest:
    """A checked request: the hook, its context, how to reach the FHIR server, and the prefetch
    (only the keys the client sent; a value may be None for "no data")."""

    hook: str
    hook_instance: str
    patient_id: str
    user_id: str
    context: Mapping[str, Any]
    encounter_id: str | None = None
    fhir_server: str | None = None
    access_token: str | None = None
    prefetch: Mapping[str, Any] = field(default_factory=dict)
    orders: tuple[dict[str, Any], ...] = ()  # the draft orders the hook is about (order-select: the selected ones)
    pathway: str | None = None
    language: str | None = None


def parse_hook_request(body: Any, service: CdsService) -> HookRequest:
    """Read the POST body of a call to `service`."""
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object")
    if body.get("hook") != service.hook:
        raise _bad(f"The service '{service.id}' answers the hook '{service.hook}', not {body.get('hook')!r}", "hook")
    hook_instance = body.get("hookInstance")
    if not isinstance(hook_instance, str) or not _is_uuid(hook_instance):
        raise _bad("hookInstance must be a UUID", "hookInstance")
    context = body.get("context")
    if not isinstance(context, dict):
        raise _bad("context must be an object", "context")
    patient_id = _text(context, "patientId", _ID, "context.patientId", required=True)
    user_id = _text(context, "userId", _USER, "context.userId (Type/id of a Practitioner, PractitionerRole, Patient or RelatedPerson)", required=True)
    encounter_id = _text(context, "encounterId", _ID, "context.encounterId")
    fhir_server = body.get("fhirServer")
    if fhir_server is not None and (not isinstance(fhir_server, str) or not re.match(r"https?://[^\s/]+", fhir_server)):
        raise _bad("fhirServer must be the base URL of a FHIR server", "fhirServer")
    access_token = _authorization(body.get("fhirAuthorization"), fhir_server)
    prefetch = body.get("prefetch", {})
    if prefetch is None:
        prefetch = {}
    if not isinstance(prefetch, dict):
        raise _bad("prefetch must be an object", "prefetch")
    extension = body.get("extension", {})
    if not isinstance(extension, dict):
        raise _bad("extension must be an object", "extension")
    return HookRequest(
        hook=service.hook,
        hook_instance=hook_instance,
        patient_id=str(patient_id),
        user_id=str(user_id),
        context=context,
        encounter_id=encounter_id,
        fhir_server=fhir_server.rstrip("/") if isinstance(fhir_server, str) else None,
        access_token=access_token,
        prefetch=prefetch,
        orders=_orders(context) if service.hook in _ORDER_HOOKS else (),
        pathway=_text(extension, PATHWAY_EXTENSION, _ID, f"extension.{PATHWAY_EXTENSION} (a PlanDefinition id)"),
        language=_text(extension, LANGUAGE_EXTENSION, _LANGUAGE, f"extension.{LANGUAGE_EXTENSION} (a BCP 47 language tag)"),
    )


def _authorization(value: Any, fhir_server: str | None) -> str | None:
    """The bearer token of `fhirAuthorization` (all its required fields checked)."""
    if value is None:
        return None
    if fhir_server is None:
        raise _bad("fhirAuthorization is given but fhirServer is not", "fhirServer")
    if not isinstance(value, dict):
        raise _bad("fhirAuthorization must be an object", "fhirAuthorization")
    for name, kind in (("access_token", str), ("token_type", str), ("expires_in", int), ("scope", str), ("subject", str)):
        if not isinstance(value.get(name), kind) or isinstance(value.get(name), bool):
            raise _bad(f"fhirAuthorization.{name} is required", f"fhirAuthorization.{name}")
    if value["token_type"].lower() != "bearer":
        raise _bad("fhirAuthorization.token_type must be Bearer", "fhirAuthorization.token_type")
    return str(value["access_token"])


def _orders(context: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    """The draft orders of an order hook; for order-select only the selected ones when the client
    says which (`selections`, "Type/id" of entries in draftOrders)."""
    bundle = context.get("draftOrders")
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle" or not isinstance(bundle.get("entry") or [], list):
        raise _bad("context.draftOrders must be a Bundle", "context.draftOrders")
    orders = tuple(
        e["resource"] for e in bundle.get("entry") or [] if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    )
    selections = context.get("selections")
    if selections is None:
        return orders
    if not isinstance(selections, list) or not all(isinstance(s, str) for s in selections):
        raise _bad("context.selections must be a list of Type/id references", "context.selections")
    return tuple(o for o in orders if f"{o.get('resourceType')}/{o.get('id')}" in selections)


def _text(holder: Mapping[str, Any], name: str, pattern: re.Pattern[str], what: str, *, required: bool = False) -> str | None:
    value = holder.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _bad(f"{what} is {'required' if value is None else 'not valid'}", what.split(" ")[0])
    return value


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _bad(message: str, where: str | None = None) -> FhirError:
    return FhirError(ErrorCategory.INVALID_PARAMETER, message, (where,) if where else ())
