"""create_app(): wiring and lifespan (database, migrations, content loading); nothing else."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from app import __version__
from app.api import fhir_rest, system
from app.api.errors import install_error_handlers
from app.api.observability import RequestContextMiddleware, configure_logging
from app.config import Settings
from app.content.loader import read_content
from app.fhir.models import RESOURCE_TYPES
from app.fhir.search_params import SearchParameterRegistry, official_search_parameters
from app.services.capability import capability_statement
from app.services.content import install_content
from app.services.context import FhirContext, utc_now_ms
from app.services.operations import OperationRegistry
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
        if settings.dev_mode:
            log.warning("development mode: no authentication; listen on 127.0.0.1 only")
        engine = create_engine(settings.database_url)
        await migrate.upgrade(engine)
        content = read_content(settings.content_dirs)
        definitions = [*official_search_parameters(), *(r for r in content if r["resourceType"] == "SearchParameter")]
        referrals = ReferralService.from_settings(settings)
        context = FhirContext(
            store=Store(engine),
            search_parameters=SearchParameterRegistry(definitions, RESOURCE_TYPES),
            default_count=settings.default_count,
            max_count=settings.max_count,
            write_hooks=referrals.write_hooks,
        )
        changed = await install_content(context, content)
        log.info("content loaded", extra={"status": f"{len(content)} resources, {changed} new or changed"})
        operations = OperationRegistry([VALIDATE, *referrals.operations])
        app.state.fhir = context
        app.state.operations = operations
        app.state.referrals = referrals
        app.state.capability_statement = capability_statement(
            context, operations, settings.base_url or "", format_instant(utc_now_ms())
        )
        referrals.start(context)
        yield
        await referrals.stop()
        await engine.dispose()

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
    app.add_middleware(RequestContextMiddleware)
    install_error_handlers(app)
    app.mount("/static/swagger-ui", StaticFiles(directory=swagger_ui_path), name="swagger-ui")
    app.include_router(system.router)
    app.include_router(fhir_rest.router)
    return app
