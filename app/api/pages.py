"""Pages for people: the patient's questionnaire form, the clinician's patient view and the
pathway viewer. Server-rendered HTML (Jinja2) over the same use cases as the FHIR API, held to the
caller's access; the form submits through the FHIR API itself. Refusals are pages, not stack traces.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse

from app.api.auth import request_access
from app.api.errors import BearerChallenge
from app.config import Settings
from app.fhir.outcome import FhirError
from app.pages import LANGUAGES, labels_for
from app.security.form_link import FormLinkRefused, link_language
from app.services.form_links import questionnaire_of
from app.services.pages import clinician_view, pathway_view

__all__ = ["mount_static", "router"]

log = logging.getLogger("backpath.pages")
router = APIRouter(prefix="/app", include_in_schema=False)

_HERE = Path(__file__).resolve().parent
_templates = Environment(loader=FileSystemLoader(_HERE / "templates"), autoescape=select_autoescape(["html"]))
# A refused link: which page to show, and its status (forged 401; expired, used or replaced 410).
_REFUSALS = {"invalid": ("link_invalid", 401), "expired": ("link_expired", 410), "used": ("link_used", 410), "replaced": ("link_expired", 410)}


def mount_static(app: FastAPI, settings: Settings) -> None:
    """The pages' own script and style, and LHC-Forms from node_modules (installed by scripts/node_packages.sh)."""
    app.mount("/app/static/pages", StaticFiles(directory=_HERE / "static"), name="pages-static")
    if settings.lforms_dir.is_dir():
        app.mount("/app/static/lforms", StaticFiles(directory=settings.lforms_dir), name="lforms")
    else:
        log.warning("LHC-Forms not found: the patient form cannot render", extra={"status": str(settings.lforms_dir)})


def _page(name: str, status: int = 200, **values: Any) -> HTMLResponse:
    return HTMLResponse(_templates.get_template(name).render(**values), status_code=status)


def _language(request: Request, fallback: str = "en") -> str:
    wanted = request.query_params.get("lang", fallback)
    return wanted if wanted in LANGUAGES else "en"


@router.get("/form/{task_id}")
async def patient_form(request: Request, task_id: str, token: str = "") -> HTMLResponse:
    """The patient's form, opened from the link on the Task; everything after the first render
    (the Task, its Questionnaire, the answers) goes through the FHIR API with the link's token."""
    links = request.app.state.form_links
    try:
        session = await links.session(request.app.state.fhir, token, task_id)
    except FormLinkRefused as refused:
        key, status = _REFUSALS[refused.reason]
        language = _language(request, link_language(token) or "en")
        return _page("refused.html", status, language=language, labels=labels_for(language), key=key)
    language = _language(request, session.grant.language)
    return _page(
        "form.html",
        language=language,
        labels=labels_for(language),
        task_id=task_id,
        patient=f"Patient/{session.grant.patient_id}",
        questionnaire_read=_questionnaire_read(session.task),
        token=token,
    )


@router.get("/patient/{patient_id}")
async def patient_view(request: Request, patient_id: str, region: str | None = None) -> HTMLResponse:
    """Where the patient is on the pathway; behind the same authentication as the API."""
    language = _language(request)
    try:
        access = await request_access(request)
        view = await clinician_view(
            request.app.state.fhir,
            request.app.state.operations,
            access,
            patient_id,
            region,
            request.app.state.settings.cds_pathway,
            language,
            datetime.now(UTC).date(),
        )
    except FhirError as problem:
        return _refusal(problem, language)
    return _page("patient.html", view=view, language=language, languages=LANGUAGES, today=datetime.now(UTC).date())


@router.get("/pathway/{plan_id}")
async def pathway_page(request: Request, plan_id: str) -> HTMLResponse:
    """A PlanDefinition drawn as a flowchart from its JSON."""
    language = _language(request)
    try:
        view = await pathway_view(request.app.state.fhir, await request_access(request), plan_id, language)
    except FhirError as problem:
        return _refusal(problem, language)
    return _page("pathway.html", view=view, language=language, languages=LANGUAGES)


def _questionnaire_read(task: dict[str, Any]) -> str:
    """The FHIR read the form makes for the Task's Questionnaire: the Task's focus, else the
    canonical's id (the content's Questionnaires have the id their canonical ends with)."""
    focus = str((task.get("focus") or {}).get("reference") or "")
    if focus.startswith("Questionnaire/"):
        return focus
    return "Questionnaire/" + str(questionnaire_of(task) or "").split("|")[0].rstrip("/").rsplit("/", 1)[-1]


def _refusal(problem: FhirError, language: str) -> HTMLResponse:
    """A plain page with the status and the safe diagnostics (never a stack trace)."""
    response = _page("error.html", problem.status, language=language, code=problem.status, message=problem.diagnostics)
    if isinstance(problem, BearerChallenge):
        response.headers["WWW-Authenticate"] = 'Bearer realm="BackPath"'
    return response
