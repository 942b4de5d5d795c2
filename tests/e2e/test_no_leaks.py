"""No data leaks: a full flow on a production-mode server (tokens, audit trail, DEBUG logging) with a
patient's name, BSN and CPR in bodies, query strings and form posts; afterwards the server's log
holds none of them, nor any access token."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from tests import servers
from tests.factories import FHIR_JSON, observation
from tests.tokens import AUDIENCE, Issuer

BSN_SYSTEM = "http://fhir.nl/fhir/NamingSystem/bsn"
CPR_SYSTEM = "urn:oid:1.2.208.176.1.2"


def test_a_full_flow_leaves_no_names_national_ids_or_tokens_in_the_log(tmp_path: Path, database_url: str) -> None:
    issuer = Issuer(tmp_path / "jwks.json")
    family, given = f"Sørensen{uuid.uuid4().hex[:6]}", "Margrethe"
    bsn, cpr = "999911120", f"2412{uuid.uuid4().int % 100:02d}-{uuid.uuid4().int % 10000:04d}"
    url = f"sqlite+aiosqlite:///{tmp_path / 'leak.db'}" if database_url.startswith("sqlite") else database_url
    log = tmp_path / "server.log"
    server = servers.start(
        {
            "DATABASE_URL": url,
            "BACKPATH_LOG_LEVEL": "DEBUG",
            "BACKPATH_BASE_URL": AUDIENCE,
            "BACKPATH_AUTH_ISSUER": issuer.name,
            "BACKPATH_AUTH_JWKS_FILE": str(issuer.jwks_file),
        },
        log,
    )
    tokens: list[str] = []

    def auth(scope: str, **claims: str) -> dict[str, str]:
        token = issuer.token(scope, **claims)
        tokens.append(token)
        return {**FHIR_JSON, "Authorization": f"Bearer {token}"}

    person = {
        "resourceType": "Patient",
        "identifier": [{"system": BSN_SYSTEM, "value": bsn}, {"system": CPR_SYSTEM, "value": cpr}],
        "name": [{"family": family, "given": [given]}],
        "birthDate": "1970-12-24",
    }
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            clinician = auth("user/*.cruds user/AuditEvent.rs", fhirUser="Practitioner/leak-test")
            created = http.post("/Patient", json=person, headers=clinician)
            assert created.status_code == 201
            anna = created.json()["id"]
            assert http.get("/Patient", params={"identifier": f"{BSN_SYSTEM}|{bsn}"}, headers=clinician).json()["total"] == 1
            assert http.get("/Patient", params={"name": family, "_include": "Patient:general-practitioner"}, headers=clinician).status_code == 200
            form = {**clinician, "Content-Type": "application/x-www-form-urlencoded"}
            assert http.post("/Patient/_search", content=f"identifier={CPR_SYSTEM}|{cpr}", headers=form).json()["total"] == 1
            again = http.post("/Patient", json=person, headers={**clinician, "If-None-Exist": f"identifier={BSN_SYSTEM}|{bsn}"})
            assert again.status_code == 200
            updated = http.put(f"/Patient?identifier={BSN_SYSTEM}|{bsn}", json={**person, "id": anna, "gender": "female"}, headers=clinician)
            assert updated.status_code == 200
            assert http.post("/Observation", json=observation(f"Patient/{anna}"), headers=clinician).status_code == 201
            invalid = http.put(f"/Patient/{anna}", json={**person, "id": anna, "birthDate": f"{family} {bsn}"}, headers=clinician)
            assert invalid.status_code in (400, 422)
            broken = http.post("/Patient", content=f'{{"resourceType": "Patient", "name": "{family}" {cpr}', headers=clinician)
            assert broken.status_code == 400
            other = auth("patient/*.rs", patient="someone-else")
            assert http.get(f"/Patient/{anna}", headers=other).status_code == 403
            assert http.get("/Patient", params={"identifier": bsn}, headers=other).json()["total"] == 0
            forged = f"{given}.{bsn}.{cpr}"
            assert http.get("/Patient", headers={**FHIR_JSON, "Authorization": f"Bearer {forged}"}).status_code == 401
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": {**person, "id": anna}, "request": {"method": "PUT", "url": f"Patient/{anna}"}},
                {"request": {"method": "GET", "url": f"Patient?identifier={BSN_SYSTEM}|{bsn}"}},
            ]}  # fmt: skip
            assert http.post("/", json=bundle, headers=clinician).status_code == 200
            assert http.get("/AuditEvent", params={"patient": f"Patient/{anna}"}, headers=clinician).json()["total"] > 5
            assert http.delete(f"/Patient/{anna}", headers=clinician).status_code == 204
    finally:
        server.stop()
    written = log.read_text(encoding="utf-8")
    assert '"logger": "backpath.access"' in written  # the log was written, at DEBUG
    for secret in [family, given, bsn, cpr, cpr.replace("-", ""), *tokens, forged]:
        assert secret not in written, f"the log holds {secret[:12]}..."
