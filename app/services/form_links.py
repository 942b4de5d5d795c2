"""Form links for questionnaire Tasks: `Task/{id}/$form-link` issues one, and a presented link
becomes the narrow `Access` of the patient who answers (see `app/security/form_link.py`).

The signing key is the server's token key (`BACKPATH_TOKEN_SIGNING_KEY_FILE`) when there is one;
otherwise a key made at start-up, so links then stop working when the process restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from app.config import Settings
from app.fhir.outcome import ErrorCategory, FhirError
from app.security.access import Access
from app.security.backend import SigningKey, load_signing_key
from app.security.form_link import (
    FormGrant,
    FormLinkRefused,
    form_link_issuer,
    is_form_link_token,
    issue_form_link,
    verify_form_link,
)
from app.services import resources
from app.services.context import FhirContext, HookResult
from app.services.operations import Operation, OperationCall, OperationResult
from app.storage.repository import StoredVersion, StoreSession

__all__ = ["FORM_LINK_INPUT", "FormLinks", "FormSession", "questionnaire_of"]

FORM_LINK_INPUT = "form-link"
LBP_ACTION = "http://backpath.dev/fhir/CodeSystem/lbp-action"
PAGE_LANGUAGES = ("nl", "da", "en")
# A Task in one of these states has been answered or withdrawn: its links are spent.
_CLOSED = frozenset({"completed", "cancelled", "failed", "rejected", "entered-in-error"})


@dataclass(frozen=True)
class FormSession:
    """A form link that checked out: the patient's access, what the link grants, and the Task now."""

    access: Access
    grant: FormGrant
    task: dict[str, Any]


def questionnaire_of(task: dict[str, Any]) -> str | None:
    """The Questionnaire a Task asks its patient to complete: its `questionnaire` input, else its focus."""
    for value in task.get("input") or []:
        if (value.get("type") or {}).get("text") == "questionnaire" and value.get("valueCanonical"):
            return str(value["valueCanonical"])
    focus = str((task.get("focus") or {}).get("reference") or "")
    return focus if focus.startswith("Questionnaire/") else None


class FormLinks:
    """Issues and checks this server's form links."""

    def __init__(self, key: SigningKey, base_url: str | None, lifetime: int) -> None:
        self.key = key
        self.base_url = (base_url or "").rstrip("/")
        self.issuer = form_link_issuer(self.base_url or "backpath")
        self.lifetime = lifetime

    @classmethod
    def from_settings(cls, settings: Settings) -> FormLinks:
        if settings.token_signing_key_file is not None:
            key = load_signing_key(settings.token_signing_key_file.read_bytes())
        else:
            pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
            key = load_signing_key(pem)
        return cls(key, settings.endpoint or settings.base_url, settings.form_link_ttl_seconds)

    def claims(self, token: str) -> bool:
        """Whether a bearer token presents itself as one of these form links."""
        return is_form_link_token(token, self.issuer)

    async def session(self, context: FhirContext, token: str, task_id: str | None = None) -> FormSession:
        """The patient's session for a link; `FormLinkRefused` when it is forged, expired, replaced or spent."""
        grant = verify_form_link(token, self.key, issuer=self.issuer, task_id=task_id)
        access = Access(client_id="form-link", user=f"Patient/{grant.patient_id}", patient=grant.patient_id, form_task=grant.task_id)
        try:
            stored = await resources.read(context, "Task", grant.task_id, access)
        except FhirError:
            raise FormLinkRefused("invalid") from None
        task: dict[str, Any] = orjson.loads(stored.content or b"{}")
        if (task.get("for") or {}).get("reference") != f"Patient/{grant.patient_id}":
            raise FormLinkRefused("invalid")
        if task.get("status") in _CLOSED:
            raise FormLinkRefused("used")
        if not any(token in str(value.get("valueUrl") or "") for value in task.get("input") or []):
            raise FormLinkRefused("replaced")  # a link issued again later takes over
        return FormSession(access, grant, task)

    async def issue(self, context: FhirContext, task_id: str, language: str | None) -> tuple[str, int]:
        """A new link for the Task, stored on it as the `form-link` input (replacing an earlier one)."""
        stored = await resources.read(context, "Task", task_id)
        task: dict[str, Any] = orjson.loads(stored.content or b"{}")
        patient_id = _patient_of(task)
        if patient_id is None or questionnaire_of(task) is None:
            raise FhirError(ErrorCategory.INVALID_PARAMETER, "A form link is for a Task that asks its patient (Task.for) to complete a Questionnaire")
        if task.get("status") in _CLOSED:
            raise FhirError(ErrorCategory.INVALID_PARAMETER, f"The Task is {task.get('status')}: there is nothing left to answer")
        async with context.store.reading() as session:
            chosen = language or await _preferred_language(session, patient_id)
        linked, url, expires = self._linked(task, patient_id, chosen)
        await resources.update(context, "Task", task_id, linked)
        return url, expires

    def _linked(self, task: dict[str, Any], patient_id: str, language: str) -> tuple[dict[str, Any], str, int]:
        token, expires = issue_form_link(
            self.key, issuer=self.issuer, task_id=str(task["id"]), patient_id=patient_id, language=language, lifetime=self.lifetime
        )
        url = f"{self.base_url}/app/form/{task['id']}?token={token}"
        inputs = [i for i in task.get("input") or [] if (i.get("type") or {}).get("text") != FORM_LINK_INPUT]
        return {**task, "input": [*inputs, {"type": {"text": FORM_LINK_INPUT}, "valueUrl": url}]}, url, expires

    async def link_new_request(
        self, session: StoreSession, context: FhirContext, task: dict[str, Any], current: StoredVersion | None, _access: Access
    ) -> HookResult:
        """Write hook: a new `sbst-request` Task for a patient gets its form link at once, so the
        practice can send it (the NL pathway asks the patient before the visit)."""
        patient_id = _patient_of(task)
        wanted = current is None and patient_id is not None and _is_sbst_request(task) and questionnaire_of(task) is not None
        if not wanted or task.get("status") in _CLOSED or any((i.get("type") or {}).get("text") == FORM_LINK_INPUT for i in task.get("input") or []):
            return HookResult(task)
        linked, _, _ = self._linked(task, str(patient_id), await _preferred_language(session, str(patient_id)))
        return HookResult(linked)

    def operation(self) -> Operation:
        async def form_link(context: FhirContext, call: OperationCall) -> OperationResult:
            assert call.resource_id is not None  # instance level only
            url, expires = await self.issue(context, call.resource_id, _language_parameter(call))
            instant = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return OperationResult(
                {"resourceType": "Parameters", "parameter": [{"name": "url", "valueUrl": url}, {"name": "expires", "valueInstant": instant}]}
            )

        return Operation(
            code="form-link",
            definition="http://backpath.dev/fhir/OperationDefinition/Task-form-link",
            resource_types=frozenset({"Task"}),
            type_level=False,
            instance_level=True,
            system_level=False,
            affects_state=True,
            handler=form_link,
            documentation="Issues the patient's short-lived form link for a questionnaire Task and stores it on the Task.",
        )


def _language_parameter(call: OperationCall) -> str | None:
    values = [value for name, value in call.query if name == "language"]
    if isinstance(call.body, dict):
        values += [str(p.get("valueCode")) for p in call.body.get("parameter") or [] if p.get("name") == "language" and p.get("valueCode")]
    if values and values[0] not in PAGE_LANGUAGES:
        raise FhirError(ErrorCategory.INVALID_PARAMETER, f"language must be one of {', '.join(PAGE_LANGUAGES)}", ("language",))
    return values[0] if values else None


def _patient_of(task: dict[str, Any]) -> str | None:
    reference = str((task.get("for") or {}).get("reference") or "")
    return reference.removeprefix("Patient/") if reference.startswith("Patient/") else None


def _is_sbst_request(task: dict[str, Any]) -> bool:
    return any(c.get("system") == LBP_ACTION and c.get("code") == "sbst-request" for c in (task.get("code") or {}).get("coding") or [])


async def _preferred_language(session: StoreSession, patient_id: str) -> str:
    """The patient's preferred communication language among the page's languages, else English."""
    stored = await session.current("Patient", patient_id)
    patient = orjson.loads(stored.content) if stored is not None and stored.content else {}
    communications = sorted(patient.get("communication") or [], key=lambda c: not c.get("preferred"))
    for communication in communications:
        for coding in (communication.get("language") or {}).get("coding") or []:
            code = str(coding.get("code") or "")[:2].lower()
            if code in PAGE_LANGUAGES:
                return code
    return "en"

