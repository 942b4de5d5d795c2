"""The outbox of messages to deliver and the inbox of messages processed, in the FHIR database.

An outgoing message is written in the same transaction as the change that caused it, so nothing
is sent that was not stored and nothing stored is never sent; a worker delivers it afterwards,
claiming it with a lease so a crashed delivery is picked up again (the receiver de-duplicates on
the MessageHeader id). The inbox remembers every processed message by MessageHeader id, with its
content hash and the acknowledgement given, so a duplicate is answered again, never re-processed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.storage.repository import StoreSession
from app.storage.schema import metadata

__all__ = [
    "DuplicateMessage",
    "InboxRecord",
    "LoggedMessage",
    "OutboxMessage",
    "OutboxRow",
    "claim",
    "due",
    "enqueue",
    "exchange_known",
    "exchange_log",
    "inbox",
    "mark_delivered",
    "mark_failed",
    "mark_retry",
    "outbox",
    "processed",
    "record_processed",
    "reset_for_resend",
    "wake_on_commit",
]

_Sequence = BigInteger().with_variant(Integer(), "sqlite")

outbox = Table(
    "outbox",
    metadata,
    Column("seq", _Sequence, primary_key=True, autoincrement=True),
    Column("message_id", String(64), nullable=False),
    Column("exchange", String(64), nullable=False),
    Column("task_id", String(64)),
    Column("destination", String(255), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("status", String(16), nullable=False),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=False), nullable=False),
    Column("lease_until", DateTime(timezone=False)),
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=False), nullable=False),
    Column("delivered_at", DateTime(timezone=False)),
    Column("ack", LargeBinary),
    # A message goes once to each of its destinations (primary and cc) under the same id.
    UniqueConstraint("message_id", "destination", name="uq_outbox_message_destination"),
    Index("ix_outbox_status_next", "status", "next_attempt_at"),
    Index("ix_outbox_exchange", "exchange", "seq"),
)

inbox = Table(
    "inbox",
    metadata,
    Column("message_id", String(64), primary_key=True),
    Column("exchange", String(64)),
    Column("sender", String(255), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("received_at", DateTime(timezone=False), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("ack", LargeBinary, nullable=False),
    Index("ix_inbox_exchange", "exchange", "received_at"),
)


@dataclass(frozen=True)
class OutboxMessage:
    """A message to deliver: written with the change that caused it."""

    message_id: str
    exchange: str
    task_id: str | None
    destination: str
    payload: bytes


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    message_id: str
    exchange: str
    task_id: str | None
    destination: str
    payload: bytes
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None


@dataclass(frozen=True)
class InboxRecord:
    message_id: str
    exchange: str | None
    sender: str
    content_hash: str
    received_at: datetime
    payload: bytes
    ack: bytes


@dataclass(frozen=True)
class LoggedMessage:
    """One message of an exchange, sent or received, for building the next one's history."""

    direction: str  # "sent" or "received"
    message_id: str
    at: datetime
    payload: bytes


class DuplicateMessage(Exception):
    """Another request recorded the same MessageHeader id first."""


_WROTE = "backpath_outbox_written"


async def enqueue(session: StoreSession, message: OutboxMessage, now: datetime) -> None:
    """Add the message to the outbox inside the caller's transaction."""
    await session.connection.execute(
        insert(outbox).values(
            message_id=message.message_id,
            exchange=message.exchange,
            task_id=message.task_id,
            destination=message.destination,
            payload=message.payload,
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    session.connection.info[_WROTE] = True


def wake_on_commit(engine: AsyncEngine, wake: Callable[[], None]) -> None:
    """Call `wake` (from the event loop) once a transaction that added outbox rows has committed,
    so delivery starts at once instead of at the next poll. The connection's return to the pool
    comes after its commit (the `commit` event itself fires before it); a rollback clears the mark."""
    loop = asyncio.get_running_loop()

    @event.listens_for(engine.sync_engine, "rollback")
    def _rolled_back(connection: Any) -> None:
        if not connection.invalidated:  # reading `info` of a lost connection would raise over the real error
            connection.info.pop(_WROTE, None)

    @event.listens_for(engine.sync_engine, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        if record.info.pop(_WROTE, False):
            loop.call_soon_threadsafe(wake)


def _row(mapping: Any) -> OutboxRow:
    return OutboxRow(**{name: mapping[name] for name in OutboxRow.__dataclass_fields__})


async def due(session: StoreSession, now: datetime, limit: int) -> list[OutboxRow]:
    """Pending messages whose time has come and whose lease (if any) has run out, oldest first;
    only the oldest pending message of each exchange, so an exchange's messages arrive in order."""
    oldest = (
        select(outbox.c.exchange, outbox.c.seq)
        .where(outbox.c.status == "pending")
        .order_by(outbox.c.seq)
    )
    rows = (await session.connection.execute(oldest)).all()
    firsts: dict[str, int] = {}
    for exchange, seq in rows:
        firsts.setdefault(exchange, seq)
    if not firsts:
        return []
    statement = (
        select(outbox)
        .where(
            outbox.c.seq.in_(sorted(firsts.values())),
            outbox.c.next_attempt_at <= now,
            or_(outbox.c.lease_until.is_(None), outbox.c.lease_until <= now),
        )
        .order_by(outbox.c.seq)
        .limit(limit)
    )
    return [_row(r._mapping) for r in (await session.connection.execute(statement)).all()]


async def claim(session: StoreSession, seq: int, now: datetime, lease_until: datetime) -> bool:
    """Take the message for one delivery attempt; False when another worker holds it."""
    result = await session.connection.execute(
        update(outbox)
        .where(
            outbox.c.seq == seq,
            outbox.c.status == "pending",
            or_(outbox.c.lease_until.is_(None), outbox.c.lease_until <= now),
        )
        .values(lease_until=lease_until, attempts=outbox.c.attempts + 1)
    )
    return bool(result.rowcount == 1)


async def mark_delivered(session: StoreSession, seq: int, now: datetime, ack: bytes) -> None:
    await session.connection.execute(
        update(outbox).where(outbox.c.seq == seq).values(status="delivered", delivered_at=now, lease_until=None, ack=ack, last_error=None)
    )


async def mark_retry(session: StoreSession, seq: int, next_attempt_at: datetime, error: str) -> None:
    await session.connection.execute(
        update(outbox).where(outbox.c.seq == seq).values(next_attempt_at=next_attempt_at, lease_until=None, last_error=error[:2000])
    )


async def mark_failed(session: StoreSession, seq: int, error: str, ack: bytes | None = None) -> None:
    await session.connection.execute(
        update(outbox).where(outbox.c.seq == seq).values(status="failed", lease_until=None, last_error=error[:2000], ack=ack)
    )


async def reset_for_resend(session: StoreSession, task_id: str, now: datetime) -> int:
    """Put the failed messages of a Task back in the queue (same MessageHeader ids); how many."""
    result = await session.connection.execute(
        update(outbox)
        .where(outbox.c.task_id == task_id, outbox.c.status == "failed")
        .values(status="pending", attempts=0, next_attempt_at=now, lease_until=None)
    )
    session.connection.info[_WROTE] = True
    return int(result.rowcount)


async def processed(session: StoreSession, message_id: str) -> InboxRecord | None:
    """The inbox record of a message already processed, if any."""
    row = (await session.connection.execute(select(inbox).where(inbox.c.message_id == message_id))).first()
    return None if row is None else InboxRecord(**{name: row._mapping[name] for name in InboxRecord.__dataclass_fields__})


async def record_processed(session: StoreSession, record: InboxRecord) -> None:
    """Remember a processed message in the caller's transaction; `DuplicateMessage` when a
    concurrent request recorded it first (that request's transaction is the one that counts)."""
    await session.flush()
    try:
        await session.connection.execute(insert(inbox).values(**record.__dict__))
    except IntegrityError:
        raise DuplicateMessage(record.message_id) from None


async def exchange_known(session: StoreSession, exchange: str) -> bool:
    """Whether any message of the exchange was processed here already."""
    row = (await session.connection.execute(select(inbox.c.message_id).where(inbox.c.exchange == exchange).limit(1))).first()
    return row is not None


async def exchange_log(session: StoreSession, exchange: str) -> list[LoggedMessage]:
    """Every message of the exchange, sent and received, oldest first."""
    sent = await session.connection.execute(
        select(outbox.c.message_id, outbox.c.created_at, outbox.c.payload).where(outbox.c.exchange == exchange)
    )
    received = await session.connection.execute(
        select(inbox.c.message_id, inbox.c.received_at, inbox.c.payload).where(inbox.c.exchange == exchange)
    )
    log = [LoggedMessage("sent", *row) for row in sent.all()] + [LoggedMessage("received", *row) for row in received.all()]
    return sorted(log, key=lambda m: m.at)
