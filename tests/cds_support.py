"""What the CDS Hooks tests share: the CDS client's keys and signed JWTs, a real HTTP stub server
(a JWK Set at a `jku`, or a FHIR server that records what it was sent), an app with client
authentication on, hook requests built from the factories, and the CDS Hooks 3.0-ballot invariants
(FHIRPath) checked on every answer the CDS client fixture receives.

Registered as a pytest plugin by tests/conftest.py.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from app.config import Settings
from app.fhir.fhirpath import evaluate
from app.main import create_app
from tests.factories import assessment_response, non_specific_answers, scored_sbst_response

ISSUER = "https://ehr.backpath-tests.example"
KID_EC, KID_RSA, KID_JKU = "ec-1", "rsa-1", "published-1"
TODAY = date.today()
CDS_JSON = {"Content-Type": "application/json", "Accept": "application/json"}

# Invariants that concern CDS Hooks 3.0 features only: not evaluated, with the reason.
SKIPPED_INVARIANTS = {
    "cds-resp-7": "actionSelectionBehavior is new in 3.0; a 2.0.1 suggestion has no such field and BackPath sends none",
}


# ------------------------------------------------------------------ keys and tokens


@dataclass(frozen=True)
class ClientKeys:
    """The CDS client's key pairs, made for this test run."""

    ec: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP384R1()))
    rsa: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048))
    published: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP384R1()))

    def jwks(self) -> dict[str, Any]:
        return {"keys": [public_jwk(self.ec, KID_EC, "ES384"), public_jwk(self.rsa, KID_RSA, "RS384")]}


def public_jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = ECAlgorithm if alg.startswith("ES") else RSAAlgorithm
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


def signed_jwt(key: Any, audience: str, *, alg: str = "ES384", kid: str | None = KID_EC, issuer: str = ISSUER, **changes: Any) -> str:
    """A client JWT as the spec describes it; `changes` replace claims (None drops one) or set
    `headers` (e.g. jku)."""
    now = int(time.time())
    claims: dict[str, Any] = {"iss": issuer, "aud": audience, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4()), "tenant": "t1"}
    headers = {**({"kid": kid} if kid else {}), **changes.pop("headers", {})}
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


class ClientJwt(httpx.Auth):
    """Signs a fresh JWT for every request, its `aud` the URL called."""

    def __init__(self, keys: ClientKeys) -> None:
        self.keys = keys

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        audience = str(request.url.copy_with(query=None))
        request.headers["Authorization"] = f"Bearer {signed_jwt(self.keys.ec, audience)}"
        yield request


# ------------------------------------------------------------------ a real HTTP stub server


@dataclass
class Stub:
    """An HTTP server on loopback: `routes` maps a path to (status, JSON body, delay in seconds);
    every request is recorded (path with query, headers)."""

    routes: dict[str, tuple[int, Any, float]] = field(default_factory=dict)
    received: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def serve(self, path: str, body: Any, status: int = 200, delay: float = 0.0) -> str:
        self.routes[path] = (status, body, delay)
        return self.url + path


@pytest.fixture(scope="session")
def stub_server() -> Iterator[Stub]:
    stub = Stub()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            stub.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            status, body, delay = stub.routes.get(self.path.split("?")[0], (404, {"resourceType": "OperationOutcome"}, 0.0))
            time.sleep(delay)
            payload = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (timeout tests)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield stub
    server.shutdown()
    server.server_close()


# ------------------------------------------------------------------ the app under test


@pytest.fixture(scope="session")
def client_keys() -> ClientKeys:
    return ClientKeys()


@pytest.fixture(scope="session")
def cds_settings(database_url: str, client_keys: ClientKeys, stub_server: Stub) -> Settings:
    """CDS client authentication on (as in production), the test client's keys configured out of band
    and one published at an allowlisted jku on the stub server; plain-http fhirServers allowed (the
    live and stub servers are on loopback)."""
    jku = stub_server.serve("/jwks.json", {"keys": [public_jwk(client_keys.published, KID_JKU, "ES384")]})
    clients = {ISSUER: {"jwks": client_keys.jwks(), "jku": [jku]}}
    return Settings(
        database_url=database_url,
        base_url="http://testserver",
        max_body_bytes=1024 * 1024,
        dev_mode=True,  # the FHIR API open, as in the shared app: these tests are about the CDS client's JWT
        audit=False,
        cds_client_auth=True,
        cds_clients=json.dumps(clients),
        cds_allow_http=True,
        cds_fetch_timeout=1.0,
    )


@pytest.fixture(scope="session")
async def cds_app(cds_settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(cds_settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def cds_client(cds_app: FastAPI, client_keys: ClientKeys, shared_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process CDS client that signs every call and checks every answer it gets."""
    invariants = load_invariants(shared_dir)

    async def check(response: httpx.Response) -> None:
        if response.request.url.path.startswith("/cds-services") and response.status_code == 200:
            await response.aread()
            answer = response.json()
            assert_valid_answer(answer, invariants)
            assert all("uuid" in card for card in answer.get("cards") or []), "BackPath cards need a uuid for feedback"

    transport = httpx.ASGITransport(app=cds_app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", auth=ClientJwt(client_keys), event_hooks={"response": [check]}
    ) as http:
        yield http


@pytest.fixture(scope="session")
async def raw_cds_client(cds_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The same app without any client JWT (the authentication tests set their own)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=cds_app), base_url="http://testserver") as http:
        yield http


# ------------------------------------------------------------------ requests


def searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


def mr_order(patient_id: str, code: str = "433141005", system: str = "http://snomed.info/sct", order_id: str = "mr-1") -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "id": order_id,
        "status": "draft",
        "intent": "order",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
    }


def subject_resources(patient_id: str, weeks: int = 2, sbst: tuple[int, int] | None = (6, 4), **changes: Any) -> dict[str, Any]:
    """A patient with an SBST response and a non-specific assessment `weeks` after T0, by prefetch key."""
    subject = f"Patient/{patient_id}"
    t0 = (TODAY - timedelta(weeks=weeks)).isoformat()
    return {
        "patient": {"resourceType": "Patient", "id": patient_id, "birthDate": "1972-02-02"},
        "sbst-response": searchset(scored_sbst_response(subject, *sbst, authored=t0)) if sbst else None,
        "sbst-scores": None,
        "lbp-assessments": searchset(assessment_response(subject, TODAY.isoformat(), **non_specific_answers(t0, **changes))),
    }


def hook_request(hook: str, patient_id: str, prefetch: Mapping[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A CDS Hooks request; `orders` becomes context.draftOrders (and selections for order-select)."""
    context: dict[str, Any] = {"userId": "Practitioner/gp-1", "patientId": patient_id, **fields.pop("context", {})}
    orders = fields.pop("orders", None)
    if orders is not None:
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": o} for o in orders]}
        if hook == "order-select":
            context.setdefault("selections", [f"{o['resourceType']}/{o['id']}" for o in orders])
    body: dict[str, Any] = {"hook": hook, "hookInstance": str(uuid.uuid4()), "context": context, **fields}
    if prefetch is not None:
        body["prefetch"] = dict(prefetch)
    return body


def codes(answer: Mapping[str, Any]) -> list[str]:
    """The lbp-action code of each card (its topic), in the order of the cards; the status card is 'status'."""
    return [str((card["source"].get("topic") or {}).get("code", "status")) for card in answer["cards"]]


# ------------------------------------------------------------------ the spec's rules on answers


def load_invariants(shared_dir: Path) -> list[dict[str, Any]]:
    data = json.loads((shared_dir / "conformance" / "cds-hooks" / "cds-hooks-3.0-ballot-invariants.json").read_text())
    return [i for i in data["invariants"] if i["id"] not in SKIPPED_INVARIANTS]


def _elements(document: Any, path: list[str]) -> list[Any]:
    found = [document]
    for step in path:
        found = [v for item in found if isinstance(item, dict) for v in (item.get(step) if isinstance(item.get(step), list) else [item.get(step)]) if v is not None]
    return found


def invariant_failures(document: Mapping[str, Any], kind: str, invariants: list[dict[str, Any]]) -> list[str]:
    """The invariants (by id) that `document` — a CDSHooksResponse, CDSHooksRequest or
    CDSHooksFeedback — breaks, evaluated with FHIRPath on each element they apply to."""
    failures = []
    for invariant in invariants:
        targets = invariant["appliesTo"] or ["CDSHooksRequest"]  # cds-r-1 names no element: the request itself
        for target in targets:
            root, *path = target.split(".")
            if root != kind:
                continue
            for element in _elements(document, path):
                if evaluate(invariant["expression"], element) != [True]:
                    failures.append(f"{invariant['id']} on {target}: {json.dumps(element)[:200]}")
    return failures


def assert_valid_answer(answer: Mapping[str, Any], invariants: list[dict[str, Any]]) -> None:
    """A 2.0.1 answer (discovery, cards or feedback receipt) with its required fields, keeping the invariants."""
    if "services" in answer:
        for service in answer["services"]:
            assert {"hook", "description", "id"} <= set(service), service
        return
    if "cards" not in answer:
        return
    for card in answer["cards"]:
        assert isinstance(card["summary"], str) and len(card["summary"]) < 140, card
        assert card["indicator"] in ("info", "warning", "critical"), card
        assert card["source"]["label"], card
        for suggestion in card.get("suggestions") or []:
            assert suggestion["label"] and suggestion["actions"], suggestion
            for action in suggestion["actions"]:
                assert action["type"] in ("create", "update", "delete") and action["description"], action
        for reason in card.get("overrideReasons") or []:
            assert {"system", "code", "display"} <= set(reason), reason
    assert invariant_failures(answer, "CDSHooksResponse", invariants) == []
