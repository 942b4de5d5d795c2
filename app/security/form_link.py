"""Form links: the signed, short-lived token that lets a patient answer one questionnaire Task.

The token (a JWT signed with the server's key, ES256/ES384/RS384 as the key is) names the Task and
the patient (`task`, `sub` = `Patient/<id>`) and the language the page should use. It has its own
issuer and audience, so it can never pass as an access token, and it grants only what the form
needs: read that Task and the Questionnaire definitions, create QuestionnaireResponses for that
patient, and move that Task along to `completed` (accepted, in-progress, completed). A completed Task makes the link spent (single use).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from app.security.backend import SigningKey

__all__ = [
    "FORM_LINK_AUDIENCE",
    "FormGrant",
    "FormLinkRefused",
    "form_link_issuer",
    "is_form_link_token",
    "issue_form_link",
    "link_language",
    "permitted_task_change",
    "verify_form_link",
]

FORM_LINK_AUDIENCE = "backpath-form-link"
_ISSUER_SUFFIX = "/form-link"
# What the patient's answers may change on the Task: everything else must stay as it was.
_TASK_FIELDS_THE_FORM_SETS = frozenset({"status", "output", "lastModified", "meta", "text"})


class FormLinkRefused(Exception):
    """Why a form link cannot be used: `reason` is `expired`, `used` or `invalid` (safe to show)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class FormGrant:
    """What one form link allows: the Task, its patient (a bare id) and the page language."""

    task_id: str
    patient_id: str
    language: str
    expires: int


def form_link_issuer(base_url: str) -> str:
    return base_url.rstrip("/") + _ISSUER_SUFFIX


def issue_form_link(key: SigningKey, *, issuer: str, task_id: str, patient_id: str, language: str, lifetime: int, now: float | None = None) -> tuple[str, int]:
    """A signed form-link token and its expiry (epoch seconds)."""
    issued = int(time.time() if now is None else now)
    claims = {
        "iss": issuer,
        "aud": FORM_LINK_AUDIENCE,
        "sub": f"Patient/{patient_id}",
        "task": task_id,
        "lang": language,
        "iat": issued,
        "exp": issued + lifetime,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid}), issued + lifetime


def is_form_link_token(token: str, issuer: str) -> bool:
    """Whether an (unverified) token claims to be one of this server's form links."""
    try:
        return jwt.decode(token, options={"verify_signature": False}).get("iss") == issuer
    except jwt.PyJWTError:
        return False


def link_language(token: str) -> str | None:
    """The language a link asks for, read without checking it: only to word a refusal page."""
    try:
        language = jwt.decode(token, options={"verify_signature": False}).get("lang")
    except jwt.PyJWTError:
        return None
    return language if isinstance(language, str) else None


def verify_form_link(token: str, key: SigningKey, *, issuer: str, task_id: str | None = None) -> FormGrant:
    """The grant of a form link whose signature, issuer, audience and lifetime check out (and that
    names `task_id` when given); `FormLinkRefused` otherwise."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.private_key.public_key(),
            algorithms=[key.algorithm],
            audience=FORM_LINK_AUDIENCE,
            issuer=issuer,
            options={"require": ["exp", "iss", "aud", "sub", "task"]},
        )
    except jwt.ExpiredSignatureError:
        raise FormLinkRefused("expired") from None
    except jwt.PyJWTError:
        raise FormLinkRefused("invalid") from None
    subject, task = str(claims["sub"]), str(claims["task"])
    if not subject.startswith("Patient/") or (task_id is not None and task != task_id):
        raise FormLinkRefused("invalid")
    return FormGrant(task, subject.removeprefix("Patient/"), str(claims.get("lang") or "en"), int(claims["exp"]))


def permitted_task_change(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether a form link's update of its Task only starts or completes it (status and outputs,
    nothing else); the Task state machine then decides whether the step itself is legal."""
    if after.get("status") not in ("accepted", "in-progress", "completed"):
        return False
    keep = set(before) | set(after)
    return all(before.get(name) == after.get(name) for name in keep - _TASK_FIELDS_THE_FORM_SETS)
