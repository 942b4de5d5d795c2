"""Small factories for test resources: each call makes distinct data, so tests never collide."""

from __future__ import annotations

import uuid
from typing import Any

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def patient(family: str = "Jansen", **fields: Any) -> dict[str, Any]:
    identifier = fields.pop("identifier", [{"system": "urn:backpath:test", "value": unique("pat")}])
    return {
        "resourceType": "Patient",
        "identifier": identifier,
        "name": [{"family": family, "given": ["Anna"]}],
        "birthDate": "1970-01-01",
        **fields,
    }


def observation(subject: str, code: str = "91351-7", value: int = 5, **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": subject},
        "valueInteger": value,
        **fields,
    }
