"""One error type for the whole service and the OperationOutcome it becomes.

The HTTP status and the issue code of every kind of failure live in `ErrorCategory`, the one
table both the HTTP layer and the batch/transaction response entries read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = ["ErrorCategory", "FhirError", "Issue", "operation_outcome"]


class ErrorCategory(Enum):
    """Kind of failure → (HTTP status, OperationOutcome issue code)."""

    MALFORMED = (400, "structure")
    INVALID_PARAMETER = (400, "invalid")
    UNAUTHORIZED = (401, "login")
    FORBIDDEN = (403, "forbidden")
    NOT_FOUND = (404, "not-found")
    METHOD_NOT_ALLOWED = (405, "not-supported")
    NOT_ACCEPTABLE = (406, "not-supported")
    CONFLICT = (409, "conflict")
    GONE = (410, "deleted")
    PRECONDITION_FAILED = (412, "conflict")
    MULTIPLE_MATCHES = (412, "multiple-matches")
    DATA_UNAVAILABLE = (412, "incomplete")  # CDS Hooks: data the service needs is missing and cannot be fetched
    TOO_LARGE = (413, "too-long")
    UNSUPPORTED_MEDIA_TYPE = (415, "not-supported")
    INVALID_RESOURCE = (422, "invalid")
    INTERNAL = (500, "exception")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def issue_code(self) -> str:
        return self.value[1]


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue."""

    severity: str
    code: str
    diagnostics: str
    expression: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        issue: dict[str, Any] = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            issue["expression"] = list(self.expression)
        return issue


@dataclass
class FhirError(Exception):
    """A failure the client caused or must be told about; becomes an OperationOutcome."""

    category: ErrorCategory
    diagnostics: str
    expression: tuple[str, ...] = ()
    issues: list[Issue] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.diagnostics)
        if not self.issues:
            self.issues = [Issue("error", self.category.issue_code, self.diagnostics, self.expression)]

    @property
    def status(self) -> int:
        return self.category.status

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    """An OperationOutcome resource (as JSON) carrying `issues`."""
    return {"resourceType": "OperationOutcome", "issue": [issue.to_json() for issue in issues]}
