"""Real `backpath serve` processes on loopback for the end-to-end tests: the live server, crash and
fuzz targets, and servers that talk to each other.

Each server has its own database and a fixed loopback port (so its address — its partners'
Endpoint — survives a restart). It can be stopped, killed, paused (SIGSTOP: the socket still
accepts, nothing answers) and resumed. Only processes started here are signalled, by their id.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scratch_database_url(test_database_url: str, folder: Path, name: str) -> str:
    """A new, empty database beside the one under test: an SQLite file in `folder`, or on
    PostgreSQL a database named `<test database>_<name>` (dropped and recreated)."""
    if test_database_url.startswith("sqlite"):
        return f"sqlite+aiosqlite:///{folder / f'{name}-{uuid.uuid4().hex[:6]}.db'}"
    parts = urlsplit(test_database_url)
    database = f"{parts.path.lstrip('/')}_{name}".replace("-", "_")
    # A thread of its own, so this works whether or not an event loop runs here.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _recreate(test_database_url, database)).result()
    return urlunsplit(parts._replace(path=f"/{database}"))


async def _recreate(admin_url: str, database: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        await connection.execute(text(f'CREATE DATABASE "{database}"'))
    await engine.dispose()


class Server:
    """One BackPath process with its own database, environment and log."""

    def __init__(self, name: str, database_url: str, log_dir: Path, env: dict[str, str], log_path: Path | None = None) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        self.log_path = log_path or log_dir / f"{name}-{self.port}.log"
        self.env = env
        self.serve_options: list[str] = []  # more `backpath serve` options, e.g. --workers 2
        self.process: subprocess.Popen[bytes] | None = None

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "BACKPATH_DEV_MODE": "1",
            "BACKPATH_LOG_LEVEL": "WARNING",
            "BACKPATH_BASE_URL": self.url,
            "BACKPATH_ENDPOINT": self.url,
            "BACKPATH_DELIVERY_POLL_SECONDS": "0.2",
            "BACKPATH_DELIVERY_RETRY_BASE_SECONDS": "0.5",
            "BACKPATH_DELIVERY_RETRY_MAX_SECONDS": "2",
            "BACKPATH_DELIVERY_TIMEOUT_SECONDS": "3",
            "BACKPATH_DELIVERY_LEASE_SECONDS": "2",
            **self.env,
        }

    def start(self) -> Server:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process owns it until it ends
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.serve_options],
            cwd=ROOT,
            env=self.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start: {self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM and wait (a clean shutdown)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: the process dies wherever it is, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def children(self) -> list[int]:
        """Process ids of the server's child processes (its audit writer, or its workers)."""
        assert self.process is not None
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                except OSError:
                    continue
                if int(parent) == self.process.pid:
                    found.append(int(entry.name))
        return found

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    async def rows(self, sql: str, **params: object) -> list[tuple[object, ...]]:
        """Rows of a read-only query on this server's own database (the outbox, the inbox)."""
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(self.database_url)
        try:
            async with engine.connect() as connection:
                return [tuple(row) for row in (await connection.execute(text(sql), params)).all()]
        finally:
            await engine.dispose()

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30)


def start(env: dict[str, str], log_path: Path) -> Server:
    """A server with `env` (which names its DATABASE_URL) on a new port, started and ready; it runs
    in development mode only when `env` says so."""
    settings = {"BACKPATH_DEV_MODE": "0", **{k: v for k, v in env.items() if k != "DATABASE_URL"}}
    return Server(log_path.stem, env["DATABASE_URL"], log_path.parent, settings, log_path).start()
