"""SMART clinical scopes, v2 grammar with the v1 forms understood.

Spec: https://hl7.org/fhir/smart-app-launch/STU2.2/scopes-and-launch-context.html

`patient/Observation.rs`, `user/ServiceRequest.cruds`, `system/*.rs`; v1 `.read` is `.rs`,
`.write` is `.cud` and `.*` is `.cruds`. A scope this server cannot honour exactly (a v2 scope with
`?param=value` restrictions, letters out of order, an unknown context) grants nothing: never more
than the client was given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["PERMISSIONS", "Scope", "parse_scopes"]

PERMISSIONS = "cruds"  # create, read, update, delete, search: the order v2 requires
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_SCOPE = re.compile(r"(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.([a-z*]+)")
_V2 = re.compile(r"c?r?u?d?s?")


@dataclass(frozen=True)
class Scope:
    """One clinical scope: whose data (`patient`, `user`, `system`), which type (`*`: any), what."""

    context: str
    resource_type: str
    permissions: frozenset[str]

    def grants(self, permission: str, resource_type: str, wildcard_excludes: frozenset[str]) -> bool:
        """Whether this scope grants `permission` on `resource_type` (a wildcard skips the excluded types)."""
        if permission not in self.permissions:
            return False
        if self.resource_type == "*":
            return resource_type not in wildcard_excludes
        return self.resource_type == resource_type


def parse_scopes(text: str) -> tuple[Scope, ...]:
    """The clinical scopes in a space-separated scope string; others (`openid`, `launch/patient`) are skipped."""
    scopes = []
    for token in text.split():
        match = _SCOPE.fullmatch(token)
        if match is None:
            continue
        context, resource_type, letters = match.groups()
        permissions = _V1.get(letters, letters)
        if not permissions or _V2.fullmatch(permissions) is None:
            continue
        scopes.append(Scope(context, resource_type, frozenset(permissions)))
    return tuple(scopes)
