"""`backpath serve --workers 2`: a listening socket per worker, so the kernel spreads connections
over both; a killed worker is replaced; SIGTERM stops every worker; a worker that cannot start
stops the server."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.servers import ROOT, Server

_LISTEN, _ESTABLISHED = "0A", "01"  # TCP states as /proc/net/tcp writes them


def _port_sockets(port: int, state: str) -> set[int]:
    """Inodes of the IPv4 sockets whose local port is `port`, in `state`."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == state:
            found.add(int(fields[9]))
    return found


def _sockets_of(pid: int) -> set[int]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def _owners(server: Server, state: str) -> set[int]:
    """The server's child processes holding a socket on its port in `state`."""
    inodes = _port_sockets(server.port, state)
    return {pid for pid in server.children() if _sockets_of(pid) & inodes}


def _until(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _two_workers(servers: Callable[[str], Server]) -> Server:
    server = servers("workers")
    server.serve_options = ["--workers", "2"]
    server.start()
    _until(lambda: len(_owners(server, _LISTEN)) == 2)
    return server


def test_connections_are_spread_over_the_workers(servers: Callable[[str], Server]) -> None:
    server = _two_workers(servers)
    workers = _owners(server, _LISTEN)
    # A listening socket each: one shared socket (uvicorn's workers) would be one inode in both.
    listening = _port_sockets(server.port, _LISTEN)
    assert len(listening) == 2 and all(len(_sockets_of(pid) & listening) == 1 for pid in workers)
    # Keep-alive connections opened at once, as a load generator does: with one shared socket
    # the first worker awake accepted them all.
    connections = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(16)]
    try:
        _until(lambda: len(_port_sockets(server.port, _ESTABLISHED) & set().union(*map(_sockets_of, workers))) == 16)
        assert _owners(server, _ESTABLISHED) == workers  # both took some (all on one by chance: p = 2^-15)
    finally:
        for connection in connections:
            connection.close()


def test_a_killed_worker_is_replaced_and_sigterm_stops_every_worker(servers: Callable[[str], Server]) -> None:
    server = _two_workers(servers)
    victim = min(_owners(server, _LISTEN))
    os.kill(victim, signal.SIGKILL)
    _until(lambda: len(_owners(server, _LISTEN)) == 2 and victim not in _owners(server, _LISTEN))
    for _ in range(10):
        assert httpx.get(f"{server.url}/metadata", timeout=30).status_code == 200
    workers = _owners(server, _LISTEN)
    process = server.process
    assert process is not None
    server.stop()
    assert process.returncode == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)


def test_a_worker_that_cannot_start_stops_the_server(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BACKPATH_")}
    environment["DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'start.db'}"
    result = subprocess.run(  # production mode without a token issuer: the app refuses to start
        [sys.executable, "-m", "app.cli", "serve", "--host", "0.0.0.0", "--port", "0", "--workers", "2"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3  # uvicorn's STARTUP_FAILURE
    assert "no token issuer" in result.stdout + result.stderr
