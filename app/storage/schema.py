"""Tables: the current version of each resource, every version ever written, and the token index.

The schema itself is created by the Alembic migrations in `migrations/`; these objects describe it
for queries.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

__all__ = ["metadata", "resource", "resource_version", "token_index"]

metadata = MetaData()

# SQLite only auto-increments an INTEGER PRIMARY KEY.
_Sequence = BigInteger().with_variant(Integer(), "sqlite")

resource = Table(
    "resource",
    metadata,
    Column("type", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("last_updated", DateTime(timezone=False), nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("content", LargeBinary, nullable=True),
)

resource_version = Table(
    "resource_version",
    metadata,
    # A global, monotonic change sequence: orders system history and makes its paging stable.
    Column("seq", _Sequence, primary_key=True, autoincrement=True),
    Column("type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_updated", DateTime(timezone=False), nullable=False),
    Column("method", String(8), nullable=False),
    Column("content", LargeBinary, nullable=True),
    UniqueConstraint("type", "id", "version", name="uq_resource_version"),
    Index("ix_resource_version_type_seq", "type", "seq"),
)

token_index = Table(
    "token_index",
    metadata,
    Column("type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("system", String(255), nullable=True),
    Column("code", String(255), nullable=True),
    Index("ix_token_index_lookup", "type", "param", "code", "system"),
    Index("ix_token_index_resource", "type", "id"),
)
