"""CDS Hooks services: discovery and calls. Spec: https://cds-hooks.hl7.org/2.0/

A call reads the hook request, gathers the subject's data (`app.services.cds_data`), applies the
regional PlanDefinition through the same use case as `$apply` (`apply_pathway`, with the hook as
the event the plan's triggers answer to and the draft orders as `%draft-orders`), and maps the
result to cards (`app.cds.cards`). Nothing is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.cds.cards import CardSettings, cds_cards
from app.cds.client_jwt import trusted_clients
from app.cds.discovery import CdsService, discovery_response, find_service
from app.cds.hooks import HookRequest, parse_hook_request
from app.config import Settings
from app.fhir.outcome import ErrorCategory, FhirError
from app.pathway.parameters import ApplyParameters
from app.services.cds_client_auth import ClientAuthenticator
from app.services.cds_data import DataSources, SubjectData, TokenVerifier, stored_matches, subject_data
from app.services.context import FhirContext
from app.services.definitions import definition_cache
from app.services.pathway import apply_pathway

__all__ = ["OVERRIDE_REASONS", "PATHWAY_BASE", "CdsHooks", "call_service", "cds_hooks", "discovery", "require_service"]

PATHWAY_BASE = "http://backpath.dev/fhir/PlanDefinition/"
OVERRIDE_REASONS = "http://backpath.dev/fhir/CodeSystem/cds-override-reason"
_INTERNAL_BASE = "urn:backpath:cds"


@dataclass(frozen=True)
class CdsHooks:
    """A deployment's CDS Hooks configuration, built once at start-up."""

    default_pathway: str
    sources: DataSources
    authenticator: ClientAuthenticator | None  # None: client authentication is off


def cds_hooks(settings: Settings) -> CdsHooks:
    """The configuration from the settings; a malformed client allowlist stops the start-up."""
    development = settings.dev_mode
    authenticate = settings.cds_client_auth if settings.cds_client_auth is not None else not development
    allow_http = settings.cds_allow_http if settings.cds_allow_http is not None else development
    authenticator = None
    if authenticate:
        clients = trusted_clients(settings.cds_clients)
        authenticator = ClientAuthenticator(clients, settings.cds_jwt_leeway, settings.cds_fetch_timeout)
    sources = DataSources(settings.cds_fetch_timeout, settings.max_body_bytes, allow_http)
    return CdsHooks(settings.cds_pathway, sources, authenticator)


def discovery() -> dict[str, Any]:
    return discovery_response()


def require_service(service_id: str) -> CdsService:
    service = find_service(service_id)
    if service is None:
        raise FhirError(ErrorCategory.NOT_FOUND, f"There is no CDS Service '{service_id}'")
    return service


async def call_service(
    context: FhirContext,
    hooks: CdsHooks,
    service_id: str,
    body: Any,
    base_url: str,
    accept_language: str | None = None,
    verifier: TokenVerifier | None = None,
) -> dict[str, Any]:
    """`POST /cds-services/{id}`: the cards for this hook request; `verifier` checks a
    `fhirAuthorization` token for this server (None: no authentication, development mode)."""
    service = require_service(service_id)
    request = parse_hook_request(body, service)
    data = await subject_data(context, hooks.sources, service, request, base_url, verifier)
    language = request.language or _preferred_language(accept_language)
    pathway = request.pathway or hooks.default_pathway
    try:
        result = await apply_pathway(context, _apply_parameters(request, data, pathway, language), access=data.access)
    except FhirError as error:
        if error.category is ErrorCategory.NOT_FOUND and error.expression == ("url",):
            raise FhirError(ErrorCategory.INVALID_PARAMETER, f"There is no pathway '{pathway}'", ("extension.dev.backpath.pathway",)) from None
        if error.category is ErrorCategory.NOT_FOUND and error.expression == ("subject",):
            raise FhirError(ErrorCategory.DATA_UNAVAILABLE, f"Patient/{request.patient_id} is not stored on this server", ("context.patientId",)) from None
        raise
    settings = CardSettings(
        hook_instance=request.hook_instance,
        language=language,
        fhir_base=base_url,
        override_reasons=await _override_reasons(context, language),
        open_requests=data.open_requests,
        status_card=service.shows_status,
        facts_line=not service.shows_status,
    )
    return {"cards": cds_cards(result, settings)}


def _apply_parameters(request: HookRequest, data: SubjectData, pathway: str, language: str | None) -> ApplyParameters:
    user_type, _, _ = request.user_id.partition("/")
    return ApplyParameters(
        subjects=(f"Patient/{request.patient_id}",),
        url=PATHWAY_BASE + pathway,
        encounter=f"Encounter/{request.encounter_id}" if request.encounter_id else None,
        practitioner=request.user_id if user_type in ("Practitioner", "PractitionerRole") else None,
        context={"userLanguage": {"coding": [{"system": "urn:ietf:bcp:47", "code": language}]}} if language else {},
        data=tuple(r for r in (data.patient, *data.facts) if r),
        parameters={"draft-orders": list(request.orders), "open-requests": list(data.open_requests), "conditions": list(data.conditions)},
        use_server_data=data.own_store,
        warnings=data.warnings,
        event=request.hook,
    )


async def _override_reasons(context: FhirContext, language: str | None) -> tuple[Mapping[str, Any], ...]:
    """The reasons a clinician may give for overriding a warning: the concepts of the LOCAL
    CodeSystem cds-override-reason (content, cached like the definitions), displays in the user's
    language where the CodeSystem has a designation for it."""
    cache = definition_cache(context)
    key = f"CodeSystem?{OVERRIDE_REASONS}"
    code_system, generation = cache.get(key), cache.generation
    if code_system is None:
        matches = await stored_matches(context, _INTERNAL_BASE, "CodeSystem", [("url", OVERRIDE_REASONS)])
        code_system = matches[0] if matches else {"concept": []}
        cache.put(key, code_system, generation)
    return tuple(
        {"system": OVERRIDE_REASONS, "code": concept["code"], "display": _display(concept, language)}
        for concept in code_system.get("concept") or []
        if concept.get("code") and concept.get("display")
    )


def _display(concept: Mapping[str, Any], language: str | None) -> str:
    wanted = (language or "").lower()
    for designation in concept.get("designation") or []:
        tag = str(designation.get("language") or "").lower()
        if wanted and designation.get("value") and (tag == wanted or tag == wanted.split("-")[0]):
            return str(designation["value"])
    return str(concept["display"])


def _preferred_language(header: str | None) -> str | None:
    """The first language of an Accept-Language header (`*` says nothing)."""
    for part in (header or "").split(","):
        tag = part.split(";")[0].strip()
        if tag and tag != "*":
            return tag
    return None
