"""The audit trail's writer in a process of its own.

Building a request's AuditEvents and storing them costs about as much CPU as a light request. In the
server's process that time is taken from requests: the interpreter lock is shared, and on SQLite
the writer held the one write lock while it waited for its turn at the interpreter. A process of
its own runs on the other core and holds the write lock only while the database writes.

The server's `AuditTrail` hands each batch over a pipe and waits for the answer, so its
all-or-none, retry and flush rules hold as before. The writer process reads the database for the
patients of resources the answer did not carry, and writes through its own engine. On SQLite it
queues for the write lock on the file lock beside the database, as another worker does. (It used to
borrow the server's turn over the pipe: under 50 clients each hand-over waited for the server's
busy event loop, and the lock stayed held for those waits, ~30 ms at p50 a batch.) It ends when told
to, or when the pipe closes because the server died.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from app.services.audit import AuditWriter, Queued, WriterUnavailable, unavailable
from app.services.context import FhirContext, search_registry
from app.storage.engine import create_engine
from app.storage.repository import Store

__all__ = ["AuditProcess", "WriterRefused"]

log = logging.getLogger("backpath.audit")

_STOP_SECONDS = 30  # for the last batch at shutdown, then the process is killed
# A writer that has not answered by then is stuck, not slow (a batch writes in well under a second):
# it is killed and replaced.
_ANSWER_SECONDS = 60
# After this many deaths of the writer in a row, the records it was writing are taken to be what
# kills it: the trail then writes them one by one and drops the one that cannot be written.
_DEATHS_PER_BATCH = 2
# Answers from the writer process: None when the batch is stored.
_UNAVAILABLE, _REFUSED = "unavailable", "refused"


class WriterRefused(Exception):
    """The writer process could not store the events of these records (their own fault)."""


class AuditProcess:
    """An `EventWriter` whose work is done by a child process, started at once and again after it died."""

    def __init__(
        self,
        database_url: str,
        definitions: list[dict[str, Any]],
        configure_logging: Callable[[str], None],
        log_level: str,
    ) -> None:
        self._arguments = (database_url, definitions, configure_logging, log_level)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-pipe")
        self._process: BaseProcess | None = None
        self._pipe: Connection | None = None
        self._deaths = 0  # of the writer in a row, since a write last succeeded
        self._start()

    async def write(self, queued: list[Queued]) -> None:
        if self._pipe is None:  # started off the event loop: the child reads its arguments slowly
            await asyncio.get_running_loop().run_in_executor(self._thread, self._start)
        pipe = self._pipe
        assert pipe is not None
        try:
            answer = await self._over(pipe, _exchange, queued)
            if answer not in (None, _UNAVAILABLE, _REFUSED):
                raise _OutOfStep
        # The process died, hangs or is out of step (also when this write was
        # cancelled midway): it is replaced, and the trail keeps the batch for the new one.
        except BaseException as error:
            self._kill()
            await asyncio.shield(asyncio.get_running_loop().run_in_executor(self._thread, self._forget))
            if not isinstance(error, OSError | EOFError | _OutOfStep):
                raise
            died = isinstance(error, EOFError | ConnectionError)
            self._deaths = self._deaths + 1 if died else 0
            if self._deaths >= _DEATHS_PER_BATCH:  # counted on until a write succeeds, so that the
                # one-by-one pass drops the record that kills it at its first death there
                raise WriterRefused("the audit writer died on these records, again") from error
            raise WriterUnavailable("the audit writer process ended or did not answer") from error
        self._deaths = 0
        if answer == _UNAVAILABLE:
            raise WriterUnavailable("the audit writer cannot store events now")
        if answer == _REFUSED:
            raise WriterRefused("the audit writer could not store these events")

    async def _over(self, pipe: Connection, step: Callable[..., str | None], *message: Any) -> str | None:
        return await asyncio.get_running_loop().run_in_executor(self._thread, step, pipe, *message)

    async def close(self) -> None:
        pipe, process = self._pipe, self._process
        if pipe is not None and process is not None:
            with contextlib.suppress(OSError):
                pipe.send(None)
            await asyncio.get_running_loop().run_in_executor(self._thread, process.join, _STOP_SECONDS)
        await asyncio.get_running_loop().run_in_executor(self._thread, self._forget)
        self._thread.shutdown()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _start(self) -> None:
        # spawn, not fork: the server's process has threads (database drivers) a fork would copy mid-work
        spawn = multiprocessing.get_context("spawn")
        ours, theirs = spawn.Pipe()
        self._process = spawn.Process(target=_serve, args=(theirs, *self._arguments), name="backpath-audit", daemon=True)
        self._process.start()
        theirs.close()  # only the child holds its end, so its death closes the pipe
        self._pipe = ours

    def _kill(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.kill()

    def _forget(self) -> None:
        self._kill()
        if self._process is not None:
            self._process.join(_STOP_SECONDS)  # reaped: no zombie left behind
        if self._pipe is not None:
            self._pipe.close()
        self._process = self._pipe = None


def _exchange(pipe: Connection, message: Any) -> str | None:
    pipe.send(message)
    return _receive(pipe)


def _receive(pipe: Connection) -> str | None:
    if not pipe.poll(_ANSWER_SECONDS):
        raise TimeoutError("the audit writer did not answer")
    answer: str | None = pipe.recv()
    return answer


class _OutOfStep(Exception):
    """The writer process answered something the protocol does not expect now."""


def _serve(pipe: Connection, database_url: str, definitions: list[dict[str, Any]], configure_logging: Callable[[str], None], log_level: str) -> None:
    """The writer process: store each batch that arrives, answer how it went, until told to stop."""
    # Ctrl-C and a service manager's SIGTERM reach the whole group: the server, which still hands
    # over its last batch, says when to stop (or its death closes the pipe).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(log_level)
    asyncio.run(_serve_batches(pipe, database_url, definitions))


async def _serve_batches(pipe: Connection, database_url: str, definitions: list[dict[str, Any]]) -> None:
    loop = asyncio.get_running_loop()
    store = Store(create_engine(database_url))
    writer = AuditWriter(FhirContext(store=store, search_parameters=search_registry(definitions)))
    try:
        while True:
            try:
                queued = await loop.run_in_executor(None, pipe.recv)
            except EOFError:  # the server is gone; what it had not handed over is lost with it
                return
            if queued is None:
                return
            answer = None
            try:
                await writer.write(queued)
            except Exception as error:
                answer = _UNAVAILABLE if unavailable(error) else _REFUSED
                if answer == _REFUSED:
                    log.error("audit events could not be built or stored", extra={"status": type(error).__name__})
            try:
                pipe.send(answer)
            except OSError:
                return
    finally:
        await store.close()
