"""Delivering the outbox: POST each message to its destination's `$process-message`, read the
acknowledgement, retry with exponential backoff, give up after the configured number of attempts.

At least once: a message is claimed with a lease before it is sent and marked delivered only
after the acknowledgement is recorded, so a crash in between sends it again later — with the same
MessageHeader id, which the receiver de-duplicates (exactly-once processing). An exhausted or
refused message marks its Task's businessStatus `delivery-failed`; `Task/{id}/$resend` queues the
Task's failed messages again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson

from app.fhir.outcome import ErrorCategory, FhirError, Issue, operation_outcome
from app.referral.payload import business_status
from app.services import resources
from app.services.context import FhirContext
from app.services.operations import Operation, OperationCall, OperationResult
from app.services.referrals.config import ReferralConfig
from app.services.referrals.directory import load
from app.services.referrals.hooks import internal
from app.services.referrals.outbound_tokens import TokenUnavailable
from app.storage import outbox

__all__ = ["DeliveryWorker", "resend_operation"]

log = logging.getLogger("backpath.delivery")

_BATCH = 16
# 401 too: the receiver could not authenticate us now (an expired or rotated token: the token source
# forgets it, so the retry gets a new one); the attempts are bounded, and a message that exhausts
# them can be re-sent.
_RETRYABLE_STATUS = frozenset({401, 408, 425, 429})


class _Retry(Exception):
    """This attempt failed in a way worth trying again."""


class _Refused(Exception):
    """The receiver refused the message for good (fatal-error, or a 4xx without acknowledgement)."""

    def __init__(self, reason: str, ack: bytes | None = None) -> None:
        super().__init__(reason)
        self.ack = ack


class DeliveryWorker:
    """The background task of one server process that empties its outbox."""

    def __init__(self, context: FhirContext, config: ReferralConfig, client: httpx.AsyncClient | None = None) -> None:
        self.context = context
        self.config = config
        self.client = client or httpx.AsyncClient(timeout=config.timeout_seconds)
        self.wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._halting = False

    def start(self) -> None:
        outbox.wake_on_commit(self.context.store.writes, self.wake.set)
        self._task = asyncio.create_task(self._run(), name="backpath-delivery")

    async def halt(self) -> None:
        """Stop the background loop (deliver_due still works when called)."""
        if self._task is not None:
            # The flag ends the loop even when the cancel is lost: Python 3.11's asyncio.wait_for
            # swallows a cancel that arrives as the awaited event fires, and the loop would go on.
            self._halting = True
            self.wake.set()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task, self._halting = None, False

    async def stop(self) -> None:
        await self.halt()
        await self.client.aclose()
        await self.config.token.aclose()

    async def _run(self) -> None:
        while not self._halting:
            try:
                while not self._halting and await self.deliver_due():
                    pass
            except Exception:  # a broken round must not end delivery: log it, try again next round
                log.exception("delivery round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.config.poll_seconds)
            self.wake.clear()

    async def deliver_due(self) -> int:
        """Attempt every message that is due now; how many were attempted."""
        now = self.context.clock()
        async with self.context.store.reading() as session:
            rows = await outbox.due(session, now, _BATCH)
        claimed = []
        for row in rows:
            async with self.context.store.writing() as session:
                if await outbox.claim(session, row.seq, now, now + timedelta(seconds=self.config.lease_seconds)):
                    claimed.append(row)
        await asyncio.gather(*(self._deliver(row) for row in claimed))
        return len(claimed)

    async def _deliver(self, row: outbox.OutboxRow) -> None:
        attempt = row.attempts + 1  # claim() counted this attempt in the database
        try:
            ack = await self._post(row)
        except _Retry as problem:
            await self._retry_or_fail(row, attempt, str(problem))
        except _Refused as refused:
            await self._settle(row, delivered=False, reason=str(refused), ack=refused.ack, at=self.context.clock())
        else:
            await self._settle(row, delivered=True, reason="", ack=ack, at=self.context.clock())

    async def _post(self, row: outbox.OutboxRow) -> bytes:
        headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
        try:
            token = await self.config.token(row.destination)
        except TokenUnavailable as problem:  # like a transport error: the partner may answer later
            raise _Retry(f"no access token: {problem}") from None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = await self.client.post(f"{row.destination}/$process-message", content=row.payload, headers=headers)
        except httpx.HTTPError as error:
            raise _Retry(f"{type(error).__name__}: {error}") from None
        if response.status_code == 401 and token:
            self.config.token.rejected(row.destination, token)  # the retry gets a new one
        if response.status_code >= 500 or response.status_code in _RETRYABLE_STATUS:
            raise _Retry(f"HTTP {response.status_code}")
        if response.status_code != 200:
            raise _Refused(f"HTTP {response.status_code}: {response.text[:500]}", response.content)
        try:
            ack = response.json()
            header = ack["entry"][0]["resource"]
            code = header["response"]["code"]
            acknowledged = header["response"]["identifier"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retry("the answer is not an acknowledgement message") from None
        if acknowledged != row.message_id:
            raise _Retry(f"the acknowledgement is for {acknowledged}, not {row.message_id}")
        if code == "transient-error":
            raise _Retry(f"transient-error: {_diagnostics(ack)}")
        if code != "ok":
            raise _Refused(f"{code}: {_diagnostics(ack)}", response.content)
        return response.content

    async def _retry_or_fail(self, row: outbox.OutboxRow, attempt: int, reason: str) -> None:
        if attempt >= self.config.max_attempts:
            await self._settle(row, delivered=False, reason=f"gave up after {attempt} attempts; last: {reason}", ack=None, at=self.context.clock())
            return
        next_at = self.context.clock() + timedelta(seconds=self.config.retry_delay(attempt))
        async with self.context.store.writing() as session:
            await outbox.mark_retry(session, row.seq, next_at, reason)
        log.info("delivery retry", extra={"status": f"{row.message_id} attempt {attempt}: {reason}"})

    async def _settle(self, row: outbox.OutboxRow, *, delivered: bool, reason: str, ack: bytes | None, at: datetime) -> None:
        """Record the outcome (`at`: when the acknowledgement arrived) and reflect it on the Task,
        in one transaction."""
        now = at
        try:
            async with self.context.store.writing() as session:
                if delivered:
                    await outbox.mark_delivered(session, row.seq, now, ack or b"")
                else:
                    await outbox.mark_failed(session, row.seq, reason, ack)
                if row.task_id:
                    await _reflect(session, self.context, row, delivered, reason, now)
        except FhirError as error:  # e.g. the Task changed meanwhile: the lease runs out, we try again
            log.warning("delivery outcome not recorded", extra={"status": f"{row.message_id}: {error.diagnostics}"})


async def _reflect(session: Any, context: FhirContext, row: outbox.OutboxRow, delivered: bool, reason: str, now: datetime) -> None:
    task = await load(session, f"Task/{row.task_id}")
    if task is None:
        return
    current = (task.get("businessStatus") or {}).get("coding", [{}])[0].get("code")
    updated = dict(task)
    if delivered:
        if task["status"] == "requested" and _event(row) == "new-referral":
            updated["status"] = "received"  # the receiver has it and is evaluating it
        if current in ("queued", "delivery-failed"):
            updated["businessStatus"] = business_status("delivered")
    else:
        updated["businessStatus"] = business_status("delivery-failed")
        note = {"time": now.isoformat(timespec="milliseconds") + "Z", "text": f"Message {row.message_id} to {row.destination} failed: {reason[:500]}"}
        updated["note"] = [*task.get("note", []), note]
    if updated != task:
        await resources.update_in(session, internal(context), "Task", task["id"], updated)


def _event(row: outbox.OutboxRow) -> str:
    header = orjson.loads(row.payload)["entry"][0]["resource"]
    return str(header.get("eventCoding", {}).get("code"))


def _diagnostics(ack: dict[str, Any]) -> str:
    texts = [
        issue.get("diagnostics", "")
        for entry in ack.get("entry", [])
        if entry.get("resource", {}).get("resourceType") == "OperationOutcome"
        for issue in entry["resource"].get("issue", [])
    ]
    return "; ".join(t for t in texts if t)[:1000] or "no details"


def resend_operation() -> Operation:
    async def resend(context: FhirContext, call: OperationCall) -> OperationResult:
        assert call.resource_id is not None
        async with context.store.writing() as session:
            stored = await resources.read_in(session, "Task", call.resource_id)
            count = await outbox.reset_for_resend(session, call.resource_id, context.clock())
            if count == 0:
                raise FhirError(ErrorCategory.CONFLICT, f"Task/{call.resource_id} has no failed messages to send again")
            task = orjson.loads(stored.content or b"{}")
            await resources.update_in(session, internal(context), "Task", task["id"], {**task, "businessStatus": business_status("queued")})
        message = f"{count} message(s) of Task/{call.resource_id} queued again with their MessageHeader ids"
        return OperationResult(operation_outcome([Issue("information", "informational", message)]))

    return Operation(
        code="resend",
        definition="http://backpath.dev/fhir/OperationDefinition/Task-resend",
        resource_types=frozenset({"Task"}),
        type_level=False,
        instance_level=True,
        system_level=False,
        affects_state=True,
        handler=resend,
        documentation="Queue the referral Task's failed messages again (same MessageHeader ids, so never processed twice).",
    )
