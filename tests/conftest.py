"""Fixtures shared by every test: the database under test, the app in-process, a live server, the
shared conformance material.

`BACKPATH_TEST_DATABASE_URL` picks the database (scripts/test.sh runs the suite once on SQLite and
once on PostgreSQL). Tests share one database per run, so each makes its own data (unique ids,
identifiers) and asserts on that, never on the store being empty.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from tests.servers import Server, scratch_database_url

ROOT = Path(__file__).resolve().parent.parent
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
    return Settings(database_url=database_url, base_url="http://testserver", max_body_bytes=1024 * 1024)


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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def live_server(database_url: str) -> Iterator[str]:
    """A real `backpath serve` process on loopback; yields its base URL."""
    port = _free_port()
    url = database_url
    if url.startswith("sqlite"):
        url = f"sqlite+aiosqlite:///{_TMP / 'live.db'}"
    env = {**os.environ, "DATABASE_URL": url, "BACKPATH_DEV_MODE": "1", "BACKPATH_LOG_LEVEL": "WARNING"}
    log = open(_TMP / f"live-{port}.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        process.kill()
    if process.poll() is not None:
        log.close()
        pytest.fail(f"the server did not start: {(_TMP / f'live-{port}.log').read_text()[-2000:]}")
    yield base
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


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
