"""Fixtures shared by every test: the database under test, the app in-process, a live server, the
shared conformance material.

`BACKPATH_TEST_DATABASE_URL` picks the database (scripts/test.sh runs the suite once on SQLite and
once on PostgreSQL). Tests share one database per run, so each makes its own data (unique ids,
identifiers) and asserts on that, never on the store being empty.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from tests.servers import ROOT, Server, scratch_database_url, start
from tests.tokens import AUDIENCE, Issuer, KeyPair

pytest_plugins = ["tests.cds_support"]  # the CDS Hooks fixtures (client keys, stub server, app with client auth)

_TMP = Path(tempfile.mkdtemp(prefix="backpath-tests-"))


def _database_url() -> str:
    return os.environ.get("BACKPATH_TEST_DATABASE_URL") or f"sqlite+aiosqlite:///{_TMP / 'test.db'}"


@pytest.fixture(scope="session")
def database_url() -> str:
    return _database_url()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """`../shared` beside the clone (CI has it there), or BACKPATH_SHARED_DIR."""
    path = Path(os.environ.get("BACKPATH_SHARED_DIR") or ROOT.parent / "shared")
    if not (path / "conformance").is_dir():
        pytest.fail(f"the shared conformance material is missing at {path}")
    return path


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    """The shared in-process app: development mode (no tokens) without the audit trail, so the core
    tests see only their own data; the security tests build their own production-mode apps."""
    return Settings(database_url=database_url, base_url="http://testserver", max_body_bytes=1024 * 1024, dev_mode=True, audit=False)


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture(scope="session")
def issuer() -> Issuer:
    """An external authorization server the secured app trusts (its JWKS is a file)."""
    return Issuer(_TMP / "issuer-jwks.json")


@pytest.fixture(scope="session")
def backend_client_key() -> KeyPair:
    """The key a registered backend client signs its assertions with (EC P-384, ES384)."""
    return KeyPair("EC")


@pytest.fixture(scope="session")
def secure_settings(settings: Settings, issuer: Issuer, backend_client_key: KeyPair) -> Settings:
    """Production mode: tokens required (the external issuer and the built-in token endpoint), audit on."""
    signing_key = _TMP / "token-signing-key.pem"
    signing_key.write_bytes(KeyPair().pem())
    clients = _TMP / "backend-clients.json"
    registered = [
        {"client_id": "partner-backpath", "jwks": {"keys": [backend_client_key.public_jwk]}, "scope": "system/*.rs system/Observation.c"},
    ]
    clients.write_text(json.dumps({"clients": registered}))
    return replace(
        settings,
        base_url=AUDIENCE,
        dev_mode=False,
        audit=True,
        auth_issuer=issuer.name,
        auth_jwks_file=issuer.jwks_file,
        token_signing_key_file=signing_key,
        backend_clients_file=clients,
        cors_origins=("https://app.backpath.test",),
    )


@pytest.fixture(scope="session")
async def secure_app(secure_settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(secure_settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture(scope="session")
async def secure_client(secure_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The secured app in-process; requests carry no token unless the test adds one."""
    transport = httpx.ASGITransport(app=secure_app)
    async with httpx.AsyncClient(transport=transport, base_url=AUDIENCE) as http:
        yield http


@pytest.fixture(autouse=True)
async def _audit_written(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """After a test on the secured app, its queued AuditEvents are written, so no later test on the
    shared database sees them arrive in the middle (the trail writes in the background)."""
    yield
    if "secure_app" in request.fixturenames:
        await request.getfixturevalue("secure_app").state.audit.flush()


@pytest.fixture(scope="session")
def live_server(database_url: str) -> Iterator[str]:
    """A real `backpath serve` process on loopback (development mode, no audit trail); yields its base URL."""
    url = database_url
    if url.startswith("sqlite"):
        url = f"sqlite+aiosqlite:///{_TMP / 'live.db'}"
    env = {"DATABASE_URL": url, "BACKPATH_DEV_MODE": "1", "BACKPATH_AUDIT": "0", "BACKPATH_LOG_LEVEL": "WARNING"}
    try:
        server = start(env, _TMP / "live.log")
    except RuntimeError as failure:
        pytest.fail(str(failure))
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def scratch_database(database_url: str) -> Callable[[str], str]:
    """Makes a new empty database of the kind under test, named after the test database
    (PostgreSQL: `<BACKPATH_PG_DBNAME>_<name>`), for servers that must not share one."""
    return lambda name: scratch_database_url(database_url, _TMP, name)


@pytest.fixture
def servers(scratch_database: Callable[[str], str]) -> Iterator[Callable[[str], Server]]:
    """Makes real BackPath servers, each on its own database and port (start them with
    `.start()` once their environment is set); every one is stopped at the end of the test."""
    made: list[Server] = []

    def make(name: str) -> Server:
        server = Server(name, scratch_database(name), _TMP, {})
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()
