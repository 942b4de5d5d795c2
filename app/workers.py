"""`backpath serve --workers N`: N server processes on one port, each listening on a socket of its
own (SO_REUSEPORT), so the kernel spreads the connections over them.

uvicorn's own workers share one listening socket, and asyncio accepts every waiting connection at
once: the first worker awake took all of a load generator's keep-alive connections, and a second
worker added nothing. The first worker starts alone (it migrates the database and installs the
content; several at once collided on a fresh database), the others once it serves. A worker that
dies is started again; one that fails its start-up stops the server (a configuration problem does
not heal by retrying).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE

__all__ = ["serve"]

log = logging.getLogger("backpath")
_SPAWN = multiprocessing.get_context("spawn")
_GRACE_SECONDS = 60  # a worker's own shutdown (open requests, the audit trail's last batch)
_POLL_SECONDS = 0.2

Worker = tuple[BaseProcess, Connection]


def serve(host: str, port: int, workers: int, options: dict[str, Any]) -> int:
    """Run until SIGINT or SIGTERM; the exit status (STARTUP_FAILURE when a worker could not start)."""
    # Bound, never listening: holds the port (and fails at once when it is taken) without the
    # kernel handing it connections that no worker would accept.
    with _reuse_port_socket(host, port) as held:
        port = held.getsockname()[1]  # port 0 names one, for every worker
        stop = threading.Event()
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, lambda *_: stop.set())
        running = [_start(host, port, options)]
        while not stop.is_set() and running[0][0].exitcode is None and not _serving(host, port):
            stop.wait(_POLL_SECONDS)
        if running[0][0].exitcode is None:
            running += [_start(host, port, options) for _ in range(workers - 1)]
        status = 0
        while not stop.is_set():
            for index, (process, lifeline) in enumerate(running):
                if process.exitcode is None:
                    continue
                if process.exitcode == STARTUP_FAILURE:
                    log.error("a worker failed to start; stopping the server")
                    status = STARTUP_FAILURE
                    stop.set()
                    break
                log.warning(f"worker {process.pid} exited with {process.exitcode}; starting another")
                lifeline.close()
                running[index] = _start(host, port, options)
            stop.wait(_POLL_SECONDS)
        _stop(running)
        return status


def _stop(running: list[Worker]) -> None:
    for process, _ in running:
        if process.exitcode is None and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    for process, lifeline in running:
        process.join(_GRACE_SECONDS)
        if process.exitcode is None:
            process.kill()
            process.join()
        lifeline.close()  # only now: its end would be a second signal to a worker still stopping


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    made = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    made.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    made.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    made.bind((host, port))
    return made


def _serving(host: str, port: int) -> bool:
    """Whether a worker listens: asyncio starts listening only after the app's start-up."""
    address = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=1):
        return True
    return False


def _start(host: str, port: int, options: dict[str, Any]) -> Worker:
    watched, lifeline = _SPAWN.Pipe(duplex=False)
    process = _SPAWN.Process(target=_worker, args=(host, port, options, watched), name="backpath-worker")
    process.start()
    watched.close()  # the worker's copy is the only one left: it sees the end of the pipe when we go
    return process, lifeline


def _worker(host: str, port: int, options: dict[str, Any], watched: Connection) -> None:
    # A group of its own: a signal to the server's group reaches the worker once, from the server,
    # not twice (uvicorn takes a second signal as "exit now" and skips the shutdown).
    os.setpgrp()
    threading.Thread(target=_end_with_server, args=(watched,), daemon=True).start()
    server = uvicorn.Server(uvicorn.Config(**options))
    server.run(sockets=[_reuse_port_socket(host, port)])
    if not server.started:  # the app refused to start (uvicorn.run says so the same way)
        sys.exit(STARTUP_FAILURE)


def _end_with_server(watched: Connection) -> None:
    """Shut down when the server process is gone (killed, so it could not say so)."""
    with contextlib.suppress(EOFError, OSError):
        watched.recv()
    os.kill(os.getpid(), signal.SIGTERM)
