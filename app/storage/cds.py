"""The CDS Hooks tables: card feedback, and the JWT ids (`jti`) of CDS clients seen until they expire.

Both inserts ignore a row that is already there (INSERT … ON CONFLICT DO NOTHING on SQLite and
PostgreSQL alike), so a repeated feedback report is stored once and a replayed token is detected
by the insert itself, atomically, whichever server process sees it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from app.storage.repository import StoreSession
from app.storage.schema import metadata

__all__ = ["FeedbackRow", "cds_client_jti", "cds_feedback", "count_feedback", "insert_feedback", "purge_client_tokens", "remember_client_token"]

_Sequence = BigInteger().with_variant(Integer(), "sqlite")

cds_feedback = Table(
    "cds_feedback",
    metadata,
    Column("seq", _Sequence, primary_key=True, autoincrement=True),
    Column("service_id", String(64), nullable=False),
    Column("card", String(255), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("outcome_timestamp", DateTime(timezone=False), nullable=False),
    Column("accepted_suggestions", Text, nullable=True),
    Column("reason_system", String(255), nullable=True),
    Column("reason_code", String(255), nullable=True),
    Column("reason_display", String(255), nullable=True),
    Column("user_comment", Text, nullable=True),
    Column("client", String(512), nullable=True),
    Column("received", DateTime(timezone=False), nullable=False),
    UniqueConstraint("service_id", "card", "outcome", "outcome_timestamp", name="uq_cds_feedback_report"),
    Index("ix_cds_feedback_service_outcome", "service_id", "outcome"),
)

cds_client_jti = Table(
    "cds_client_jti",
    metadata,
    Column("issuer", String(512), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_at", DateTime(timezone=False), nullable=False),
    Index("ix_cds_client_jti_expires_at", "expires_at"),
)


@dataclass(frozen=True)
class FeedbackRow:
    service_id: str
    card: str
    outcome: str
    outcome_timestamp: datetime
    accepted_suggestions: tuple[str, ...]
    reason_system: str | None
    reason_code: str | None
    reason_display: str | None
    user_comment: str | None
    client: str | None
    received: datetime


def _insert_ignoring_duplicates(session: StoreSession, table: Table) -> Any:
    dialect = postgresql if session.connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


async def insert_feedback(session: StoreSession, rows: Sequence[FeedbackRow]) -> int:
    """Store the reports; returns how many were new (the rest were duplicates)."""
    new = 0
    for row in rows:
        values = {**row.__dict__, "accepted_suggestions": json.dumps(list(row.accepted_suggestions)) if row.accepted_suggestions else None}
        result = await session.connection.execute(_insert_ignoring_duplicates(session, cds_feedback).values(**values))
        new += max(result.rowcount, 0)
    return new


async def count_feedback(session: StoreSession, service_id: str) -> dict[tuple[str, str | None, str | None], int]:
    """Reports per (outcome, override reason system, code) for one service."""
    columns = (cds_feedback.c.outcome, cds_feedback.c.reason_system, cds_feedback.c.reason_code)
    statement = select(*columns, func.count()).where(cds_feedback.c.service_id == service_id).group_by(*columns)
    return {(row[0], row[1], row[2]): int(row[3]) for row in await session.connection.execute(statement)}


async def remember_client_token(session: StoreSession, issuer: str, jti: str, expires_at: datetime) -> bool:
    """Record a client's token id; False when it was already recorded (a replay)."""
    statement = _insert_ignoring_duplicates(session, cds_client_jti).values(issuer=issuer, jti=jti, expires_at=expires_at)
    result = await session.connection.execute(statement)
    return bool(result.rowcount == 1)


async def purge_client_tokens(session: StoreSession, now: datetime) -> None:
    """Forget the token ids of tokens that have expired (they can no longer be replayed)."""
    await session.connection.execute(delete(cds_client_jti).where(cds_client_jti.c.expires_at < now))
