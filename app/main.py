"""create_app(): wiring and lifespan (database, migrations, content loading); nothing else."""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from app import __version__
from app.api import cds_hooks, fhir_rest, oauth, pages, system
from app.api.audit import AuditMiddleware
from app.api.auth import Authenticator
from app.api.errors import install_error_handlers
from app.api.keys import FileJwks, JwksSource, StaticJwks, UrlJwks
from app.api.observability import RequestContextMiddleware, configure_logging
from app.config import Settings
from app.content.loader import read_content
from app.fhir.search_params import official_search_parameters
from app.security.backend import ReplayGuard, load_clients, load_signing_key
from app.services.audit import AuditTrail
from app.services.audit_process import AuditProcess
from app.services.capability import capability_statement
from app.services.cds import cds_hooks as cds_hooks_configuration
from app.services.content import install_content
from app.services.context import FhirContext, merged_write_hooks, search_registry, utc_now_ms
from app.services.form_links import FormLinks
from app.services.operations import OperationRegistry
from app.services.pathway import ACTIVITY_DEFINITION_APPLY, PLAN_DEFINITION_APPLY, PLAN_DEFINITION_R5_APPLY
from app.services.questionnaire_extract import EXTRACT
from app.services.questionnaire_populate import POPULATE
from app.services.questionnaires import score_questionnaire_response
from app.services.referrals import ReferralService
from app.services.stored import format_instant
from app.services.validate import VALIDATE
from app.storage import migrate
from app.storage.engine import create_engine
from app.storage.repository import Store

__all__ = ["create_app"]

log = logging.getLogger("backpath")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        problems = settings.problems()
        if problems:
            log.error("refusing to start", extra={"status": "; ".join(problems)})
            raise RuntimeError("BackPath will not start: " + "; ".join(problems))
        if settings.dev_mode:
            log.warning("development mode: no authentication; listen on 127.0.0.1 only")
        exits = AsyncExitStack()
        http = await exits.enter_async_context(httpx.AsyncClient())
        _install_auth(app, settings, http)
        engine = create_engine(settings.database_url)
        await migrate.upgrade(engine)
        content = read_content(settings.content_dirs)
        definitions = [*official_search_parameters(), *(r for r in content if r["resourceType"] == "SearchParameter")]
        referrals = ReferralService.from_settings(settings)
        form_links = FormLinks.from_settings(settings)
        context = FhirContext(
            store=Store(engine),
            search_parameters=search_registry(definitions),
            default_count=settings.default_count,
            max_count=settings.max_count,
            write_hooks=merged_write_hooks(
                {"QuestionnaireResponse": [score_questionnaire_response]},
                referrals.write_hooks,
                {"Task": [form_links.link_new_request]},
            ),
        )
        changed = await install_content(context, content)
        log.info("content loaded", extra={"status": f"{len(content)} resources, {changed} new or changed"})
        operations = OperationRegistry(
            [
                VALIDATE,
                EXTRACT,
                POPULATE,
                PLAN_DEFINITION_APPLY,
                PLAN_DEFINITION_R5_APPLY,
                ACTIVITY_DEFINITION_APPLY,
                *referrals.operations,
                form_links.operation(),
            ]
        )
        app.state.fhir = context
        app.state.cds_hooks = cds_hooks_configuration(settings)
        app.state.operations = operations
        app.state.referrals = referrals
        app.state.form_links = form_links
        app.state.capability_statement = capability_statement(
            context, operations, settings.base_url or "", format_instant(utc_now_ms()),
            None if settings.dev_mode else oauth.smart_security(settings),
        )
        if settings.audit:
            writer = AuditProcess(settings.database_url, definitions, configure_logging, settings.log_level)
            app.state.audit = AuditTrail(writer, context.clock)
        referrals.start(context)
        # What start-up built (models, search definitions, content) lives as long as the server: moved
        # out of the collector's sight, a full collection no longer walks it (~150 ms pauses under load).
        gc.freeze()
        yield
        gc.unfreeze()
        await referrals.stop()
        if app.state.audit is not None:
            await app.state.audit.close()
        await context.store.close()
        await exits.aclose()

    configure_logging(settings.log_level)
    app = FastAPI(
        title="BackPath FHIR R4 API",
        version=__version__,
        description="FHIR R4 (4.0.1) server for low-back-pain care pathways. All errors are OperationOutcomes.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.authenticator = app.state.token_issuer = app.state.audit = None
    app.add_middleware(AuditMiddleware)
    if settings.cors_origins:  # closed unless origins are configured (browsers then refuse cross-origin calls)
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Accept", "If-Match", "If-None-Match", "If-None-Exist", "Prefer", "X-Request-ID"],
            expose_headers=["Location", "ETag", "Last-Modified", "X-Request-ID", "WWW-Authenticate"],
        )
    app.add_middleware(RequestContextMiddleware)
    install_error_handlers(app)
    app.mount("/static/swagger-ui", StaticFiles(directory=swagger_ui_path), name="swagger-ui")
    app.include_router(system.router)
    app.include_router(oauth.router)
    pages.mount_static(app, settings)
    app.include_router(pages.router)  # before the FHIR routes, whose /{resource_type}/{id} would match /app/...
    app.include_router(cds_hooks.router)  # before the FHIR routes, whose /{resource_type} would match too
    app.include_router(fhir_rest.router)
    return app


def _install_auth(app: FastAPI, settings: Settings, http: httpx.AsyncClient) -> None:
    """The trusted issuers (an external one, this server's own token endpoint) and their keys."""
    issuers: dict[str, JwksSource] = {}
    if settings.auth_issuer and settings.auth_jwks_url:
        issuers[settings.auth_issuer] = UrlJwks(settings.auth_jwks_url, http)
    elif settings.auth_issuer and settings.auth_jwks_file:
        issuers[settings.auth_issuer] = FileJwks(settings.auth_jwks_file)
    if settings.token_signing_key_file and settings.backend_clients_file and settings.base_url:
        key = load_signing_key(settings.token_signing_key_file.read_bytes())
        issuer = oauth.own_issuer(settings.base_url)
        issuers[issuer] = StaticJwks([key.public_jwk])
        app.state.token_issuer = oauth.TokenIssuer(
            clients=load_clients(json.loads(settings.backend_clients_file.read_text())),
            key=key,
            issuer=issuer,
            audience=settings.audience or settings.base_url,
            token_url=f"{settings.base_url}/auth/token",
            lifetime=settings.token_lifetime_seconds,
            replay=ReplayGuard(),
        )
    if not settings.dev_mode:
        app.state.authenticator = Authenticator(issuers, settings.audience or "", settings.auth_leeway_seconds)
