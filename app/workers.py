"""`backpath serve --workers N`: N server processes on one port, each listening on a socket of its
own (SO_REUSEPORT), so the kernel spreads the connections over them.

uvicorn's own workers share one listening socket, and asyncio accepts every waiting connection at
once: the first worker awake took all of a load generator's keep-alive connections, and a second
worker added nothing. Here a worker that dies is started again; one that fails its start-up stops
the server (a configuration problem does not heal by retrying).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
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


def serve(host: str, port: int, workers: int, options: dict[str, Any]) -> int:
    """Run until SIGINT or SIGTERM; the exit status (STARTUP_FAILURE when a worker could not start)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Bound, never listening: holds the port (and fails at once when it is taken) without the
    # kernel handing it connections that no worker would accept.
    with _reuse_port_socket(family, host, port):
        stop = threading.Event()
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, lambda *_: stop.set())
        running = [_start(host, port, options) for _ in range(workers)]
        status = 0
        while not stop.wait(0.5):
            for index, (process, _) in enumerate(running):
                if process.exitcode is None:
                    continue
                if process.exitcode == STARTUP_FAILURE:
                    log.error("a worker failed to start; stopping the server")
                    status = STARTUP_FAILURE
                    stop.set()
                    break
                log.warning(f"worker {process.pid} exited with {process.exitcode}; starting another")
                running[index][1].close()
                running[index] = _start(host, port, options)
        for process, _ in running:
            if process.exitcode is None and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)
        for process, lifeline in running:
            process.join(_GRACE_SECONDS)
            if process.exitcode is None:
                process.kill()
                process.join()
            lifeline.close()  # only now: its end would be a second signal to a worker still stopping
        return status


def _reuse_port_socket(family: socket.AddressFamily, host: str, port: int) -> socket.socket:
    made = socket.socket(family, socket.SOCK_STREAM)
    made.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    made.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    made.bind((host, port))
    return made


def _start(host: str, port: int, options: dict[str, Any]) -> tuple[BaseProcess, Connection]:
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
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = _reuse_port_socket(family, host, port)
    listening.listen(2048)  # uvicorn's default backlog
    uvicorn.Server(uvicorn.Config(**options)).run(sockets=[listening])


def _end_with_server(watched: Connection) -> None:
    """Shut down when the server process is gone (killed, so it could not say so)."""
    with contextlib.suppress(EOFError, OSError):
        watched.recv()
    os.kill(os.getpid(), signal.SIGTERM)
