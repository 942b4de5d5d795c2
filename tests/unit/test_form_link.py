"""Form-link tokens: bound to a Task and patient, short-lived, of their own issuer and audience,
and allowing only the steps that complete their Task."""

from __future__ import annotations

import time

import jwt
import pytest

from app.security.access import Access, Limit
from app.security.backend import load_signing_key
from app.security.form_link import (
    FormLinkRefused,
    form_link_issuer,
    issue_form_link,
    permitted_task_change,
    verify_form_link,
)
from tests.tokens import KeyPair

KEY = load_signing_key(KeyPair("EC").pem())
ISSUER = form_link_issuer("http://backpath.test")


def _token(**options: object) -> str:
    values: dict[str, object] = {"task_id": "t1", "patient_id": "p1", "language": "nl", "lifetime": 600, **options}
    return issue_form_link(KEY, issuer=ISSUER, **values)[0]  # type: ignore[arg-type]


def test_a_link_names_its_task_patient_and_language() -> None:
    grant = verify_form_link(_token(), KEY, issuer=ISSUER, task_id="t1")
    assert (grant.task_id, grant.patient_id, grant.language) == ("t1", "p1", "nl")


@pytest.mark.parametrize(
    ("token", "task", "reason"),
    [
        (lambda: _token(now=time.time() - 3600), "t1", "expired"),
        (lambda: _token(), "t2", "invalid"),  # another Task's page
        (lambda: issue_form_link(load_signing_key(KeyPair("EC").pem()), issuer=ISSUER, task_id="t1", patient_id="p1", language="nl", lifetime=600)[0], "t1", "invalid"),
        (lambda: issue_form_link(KEY, issuer="http://elsewhere/form-link", task_id="t1", patient_id="p1", language="nl", lifetime=600)[0], "t1", "invalid"),
        (lambda: jwt.encode({"iss": ISSUER, "aud": "backpath-form-link", "sub": "Patient/p1", "task": "t1", "exp": time.time() + 60}, "a-shared-secret-of-thirty-two-bytes!", algorithm="HS256"), "t1", "invalid"),
        (lambda: "not-a-jwt", "t1", "invalid"),
    ],
    ids=["expired", "other-task", "other-key", "other-issuer", "hs256", "garbage"],
)
def test_refused_links(token: object, task: str, reason: str) -> None:
    with pytest.raises(FormLinkRefused) as refused:
        verify_form_link(token(), KEY, issuer=ISSUER, task_id=task)  # type: ignore[operator]
    assert refused.value.reason == reason


def test_a_link_is_not_an_access_token() -> None:
    claims = jwt.decode(_token(), options={"verify_signature": False})
    assert claims["aud"] == "backpath-form-link" and "scope" not in claims


def test_form_link_access_reaches_only_its_task_the_definitions_and_the_answers() -> None:
    access = Access(client_id="form-link", patient="p1", form_task="t1")
    assert access.limit("r", "Task") is Limit.INSTANCE and access.names("Task", "t1") and not access.names("Task", "t2")
    assert access.limit("u", "Task") is Limit.INSTANCE
    assert access.limit("r", "Questionnaire") is Limit.ANY
    assert access.limit("c", "QuestionnaireResponse") is Limit.COMPARTMENT
    for permission, kind in (("s", "Task"), ("c", "Task"), ("r", "Patient"), ("r", "QuestionnaireResponse"), ("s", "QuestionnaireResponse"), ("r", "PlanDefinition"), ("d", "Task")):
        assert access.limit(permission, kind) is Limit.DENIED, (permission, kind)


def test_a_link_may_only_move_its_task_towards_completed() -> None:
    task = {"resourceType": "Task", "id": "t1", "status": "requested", "owner": {"reference": "Patient/p1"}, "input": [{"type": {"text": "x"}}]}
    assert permitted_task_change(task, {**task, "status": "accepted"})
    assert permitted_task_change(task, {**task, "status": "completed", "output": [{"valueReference": {"reference": "QuestionnaireResponse/q"}}]})
    assert not permitted_task_change(task, {**task, "status": "cancelled"})
    assert not permitted_task_change(task, {**task, "status": "completed", "owner": {"reference": "Practitioner/x"}})
    assert not permitted_task_change(task, {**task, "status": "completed", "input": []})
