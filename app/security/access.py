"""Who is asking and what they may do: a token's SMART scopes applied per interaction and resource type.

Spec: https://hl7.org/fhir/smart-app-launch/STU2.2/scopes-and-launch-context.html. Each interaction
needs one permission letter on the type it touches (read, vread and instance history `r`; search
and type/system history `s`; create `c`; update, patch and create-on-update `u`; delete `d`), asked
for by the service that runs it; the answer for a type is a `Limit`: any resource, only the token
patient's compartment, or nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from importlib import resources as package_data

from app.fhir.outcome import ErrorCategory, FhirError
from app.fhir.search_params import compartment_parameters
from app.security.scopes import Scope

__all__ = [
    "AUDIT_TYPES",
    "COMPARTMENT_TYPES",
    "DEVELOPMENT",
    "IMMUTABLE_TYPES",
    "NON_PATIENT_TYPES",
    "TRUSTED",
    "Access",
    "Limit",
]

COMPARTMENT_TYPES: frozenset[str] = frozenset(compartment_parameters()) | {"Patient"}
NON_PATIENT_TYPES: frozenset[str] = frozenset(
    json.loads(package_data.files("app.data").joinpath("non-patient-types.json").read_text())["types"]
)
# Reading the audit trail needs a scope that names AuditEvent: `*` never includes it.
AUDIT_TYPES = frozenset({"AuditEvent"})
# Kept as written: no update, patch or delete through the API, whatever the scopes.
IMMUTABLE_TYPES = frozenset({"AuditEvent"})

_VERBS = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}


class Limit(Enum):
    """How far a permission on a type reaches for one token."""

    ANY = "any"  # every resource of the type
    COMPARTMENT = "compartment"  # only resources in the token patient's compartment
    INSTANCE = "instance"  # only the one resource a form link names (`Access.form_task`)
    DENIED = "denied"


@dataclass(frozen=True)
class Access:
    """The caller of one request: client, user, granted scopes and the patient in context."""

    client_id: str | None = None
    user: str | None = None  # fhirUser (e.g. Practitioner/123) or the token subject
    scopes: tuple[Scope, ...] = ()
    patient: str | None = None
    unrestricted: bool = False  # server-internal calls and development mode
    form_task: str | None = None  # a patient's form link: the one Task it answers (see security/form_link.py)

    def limit(self, permission: str, resource_type: str) -> Limit:
        """How far `permission` (one of c r u d s) on `resource_type` reaches: user/ and system/
        scopes reach every resource, patient/ scopes the compartment of the token's patient."""
        if self.unrestricted:
            return Limit.ANY
        if self.form_task is not None:
            return _FORM_LINK_LIMITS.get((permission, resource_type), Limit.DENIED)
        found = Limit.DENIED
        for scope in self.scopes:
            if not scope.grants(permission, resource_type, AUDIT_TYPES):
                continue
            if scope.context != "patient":
                return Limit.ANY
            found = self._patient_limit(permission, resource_type)
        return found

    def _patient_limit(self, permission: str, resource_type: str) -> Limit:
        if self.patient is None:  # a patient/ scope without a patient in context grants nothing
            return Limit.DENIED
        if resource_type in COMPARTMENT_TYPES:
            return Limit.COMPARTMENT
        if resource_type in NON_PATIENT_TYPES and permission in "rs":
            return Limit.ANY
        return Limit.DENIED

    def require(self, permission: str, resource_type: str) -> Limit:
        """The limit, or 403 when the scopes grant nothing."""
        limit = self.limit(permission, resource_type)
        if limit is Limit.DENIED:
            raise FhirError(ErrorCategory.FORBIDDEN, f"The access token does not allow to {_VERBS[permission]} {resource_type}")
        return limit

    def names(self, resource_type: str, resource_id: object) -> bool:
        """Whether this is the one resource an `INSTANCE` limit allows (a form link's Task)."""
        return resource_type == "Task" and self.form_task is not None and resource_id == self.form_task

    @property
    def restricted_to_patient(self) -> bool:
        """Whether some permission of this token may be limited to one patient's compartment."""
        return not self.unrestricted and self.patient is not None and any(s.context == "patient" for s in self.scopes)


# All a form link allows: read its Task and the questionnaire definitions, answer for its patient,
# and complete the Task (services/form_links.py refuses any other change of the Task).
_FORM_LINK_LIMITS = {
    ("r", "Questionnaire"): Limit.ANY,
    ("c", "QuestionnaireResponse"): Limit.COMPARTMENT,
    ("r", "Task"): Limit.INSTANCE,
    ("u", "Task"): Limit.INSTANCE,
}

# Calls the server makes for itself (content install, operation internals) and development mode.
TRUSTED = Access(client_id="backpath", unrestricted=True)
DEVELOPMENT = Access(client_id="development-mode", unrestricted=True)
