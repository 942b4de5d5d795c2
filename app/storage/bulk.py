"""Rows inserted through the driver's own bulk path: COPY on PostgreSQL, executemany on SQLite.

For large batches of rows known to be new (server-generated ids, such as the audit trail's), this
costs a fraction of SQLAlchemy's per-row parameter handling; it runs on the caller's connection,
so inside its transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["bulk_insert"]


async def bulk_insert(connection: AsyncConnection, table: Table, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert `rows`: tuples in the table's column order, without its autoincrement column."""
    if not rows:
        return
    columns = [c for c in table.columns if c is not table.autoincrement_column]
    driver: Any = (await connection.get_raw_connection()).driver_connection
    if connection.dialect.name == "postgresql":
        await driver.copy_records_to_table(table.name, records=rows, columns=[c.name for c in columns])
        return
    processors = [c.type.bind_processor(connection.dialect) for c in columns]
    converted = [tuple(p(v) if p else v for p, v in zip(processors, row, strict=True)) for row in rows]
    names = ", ".join(c.name for c in columns)
    await driver.executemany(f"INSERT INTO {table.name} ({names}) VALUES ({', '.join('?' * len(columns))})", converted)
