"""Test organisations, endpoints and referrals for the referral flows.

Identifier *systems* are the real ones (referral-standards.md); the *values* are clearly test
values that no real party holds: GLNs under GS1's prefix 952 (reserved for demonstrations), and
SOR, CPR, BSN, AGB, URA and UZI values starting with 99/9999, which no real issuer hands out (a CPR
with day 99, an AGB of provider kind 99). Names start with "TEST".
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.referral import codes
from tests.factories import scored_sbst_response

FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def _digits(count: int) -> str:
    return "".join(random.choice("0123456789") for _ in range(count))


def demo_gln() -> str:
    """A GLN under GS1's demonstration prefix 952, with a valid check digit."""
    body = "952" + _digits(9)
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return body + str((10 - total % 10) % 10)


def ident(system: str, value: str) -> dict[str, str]:
    return {"system": system, "value": value}


@dataclass
class Org:
    """An organisation taking part in the tests: its Organization resource and its endpoint."""

    id: str
    name: str
    identifiers: list[dict[str, str]]
    country: str

    @property
    def resource(self) -> dict[str, Any]:
        return {"resourceType": "Organization", "id": self.id, "identifier": self.identifiers, "name": self.name, "active": True}

    @property
    def reference(self) -> str:
        return f"Organization/{self.id}"

    def identity_setting(self) -> str:
        """BACKPATH_ORGANIZATION_IDENTIFIERS for the server that is this organisation."""
        return ",".join(f"{i['system']}|{i['value']}" for i in self.identifiers)

    @property
    def channel(self) -> str:
        return "zorgdomein-style" if self.country == "NL" else "medcom-fhir-message"


def dk_org(kind: str) -> Org:
    suffix = uuid.uuid4().hex[:8]
    identifiers = [ident(codes.SOR, "9999" + _digits(11)), ident(codes.GLN, demo_gln())]
    return Org(f"test-{kind}-{suffix}", f"TEST {kind} {suffix}", identifiers, "DK")


def nl_org(kind: str) -> Org:
    suffix = uuid.uuid4().hex[:8]
    identifiers = [ident(codes.URA, "9999" + _digits(4)), ident(codes.AGB, "99" + _digits(6))]
    return Org(f"test-{kind}-{suffix}", f"TEST {kind} {suffix}", identifiers, "NL")


def endpoint(org: Org, address: str) -> dict[str, Any]:
    return {
        "resourceType": "Endpoint",
        "id": f"{org.id}-endpoint",
        "status": "active",
        "connectionType": {"system": codes.CHANNEL, "code": org.channel},
        "name": f"{org.name} referrals",
        "managingOrganization": {"reference": org.reference},
        "payloadType": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/endpoint-payload-type", "code": "any"}]}],
        "payloadMimeType": ["application/fhir+json"],
        "address": address,
    }


async def put(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = await client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource, headers=FHIR_JSON)
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


async def post(client: httpx.AsyncClient, resource: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(f"/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def register(client: httpx.AsyncClient, org: Org, address: str | None) -> None:
    """Store the organisation (and its Endpoint at `address`) in the server behind `client`."""
    await put(client, org.resource)
    if address is not None:
        await put(client, endpoint(org, address))


@dataclass
class Practice:
    """The referring side's records: the GP and their role at the practice."""

    org: Org
    practitioner: dict[str, Any] = field(default_factory=dict)
    role: dict[str, Any] = field(default_factory=dict)

    async def store(self, client: httpx.AsyncClient) -> None:
        practitioner: dict[str, Any] = {"resourceType": "Practitioner", "name": [{"family": "TEST Huisarts", "given": ["Eva"]}]}
        if self.org.country == "NL":
            practitioner["identifier"] = [ident(codes.UZI, "9999" + _digits(5))]
        self.practitioner = await post(client, practitioner)
        self.role = await post(
            client,
            {
                "resourceType": "PractitionerRole",
                "practitioner": {"reference": f"Practitioner/{self.practitioner['id']}"},
                "organization": {"reference": self.org.reference},
            },
        )

    @property
    def role_reference(self) -> str:
        return f"PractitionerRole/{self.role['id']}"


def patient(country: str) -> dict[str, Any]:
    identifier = ident(codes.CPR, "99" + _digits(8)) if country == "DK" else ident(codes.BSN, "9999" + _digits(5))
    return {"resourceType": "Patient", "identifier": [identifier], "name": [{"family": "TEST Jensen", "given": ["Ane"]}], "birthDate": "1971-03-04"}


def sbst_observations(patient_ref: str, total: int = 7, distress: int = 5) -> list[dict[str, Any]]:
    """The score Observations of a high-risk STarT Back response (contract: LOINC codes and LA answers)."""
    base = {"resourceType": "Observation", "status": "final", "subject": {"reference": patient_ref}, "effectiveDateTime": "2026-03-01"}
    return [
        {**base, "code": {"coding": [{"system": codes.LOINC, "code": "91351-7", "display": "Total score [STarT Back]"}]}, "valueInteger": total},
        {**base, "code": {"coding": [{"system": codes.LOINC, "code": "91350-9", "display": "Distress subscore [STarT Back]"}]}, "valueInteger": distress},
        {
            **base,
            "code": {"coding": [{"system": codes.LOINC, "code": "91352-5", "display": "STarT Back Screening risk level"}]},
            "valueCodeableConcept": {"coding": [{"system": codes.LOINC, "code": "LA9193-9", "display": "High"}]},
        },
    ]


def referral(patient_ref: str, requester: str, performer: str, *, country: str, supporting: list[str] = (), status: str = "active", intent: str = "order") -> dict[str, Any]:  # type: ignore[assignment]
    action = "meekijkconsult" if country == "NL" else "spine-centre-referral"
    reason = (
        {"coding": [{"system": "http://hl7.org/fhir/sid/icpc-1-nl", "code": "L03"}], "text": "Low back symptom/complaint"}
        if country == "NL"
        else {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "M54.5", "display": "Low back pain"}]}
    )
    request: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": status,
        "intent": intent,
        "priority": "routine",
        "code": {"coding": [{"system": codes.LBP_ACTION, "code": action}], "text": action.replace("-", " ")},
        "subject": {"reference": patient_ref},
        "authoredOn": "2026-03-02",
        "requester": {"reference": requester},
        "performer": [{"reference": performer}],
        "reasonCode": [reason],
        "note": [{"text": "Eight weeks without satisfactory progress; please assess."}],
    }
    if supporting:
        request["supportingInfo"] = [{"reference": s} for s in supporting]
    return request


def parameters(**values: Any) -> dict[str, Any]:
    """A Parameters body: strings become valueString, dicts with resourceType become resource."""
    parameter = []
    for name, value in values.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and "resourceType" in item:
                parameter.append({"name": name, "resource": item})
            elif isinstance(item, dict):
                parameter.append({"name": name, **item})
            else:
                parameter.append({"name": name, "valueString": item})
    return {"resourceType": "Parameters", **({"parameter": parameter} if parameter else {})}


def sbst_response(patient_ref: str) -> dict[str, Any]:
    """A completed high-risk STarT Back response (total 7, distress subscale 5) with its nine answers."""
    return scored_sbst_response(patient_ref, 7, 5, authored="2026-03-01T08:00:00Z")
