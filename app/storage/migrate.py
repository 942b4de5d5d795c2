"""Bring a database to the current schema with the Alembic migrations shipped in the package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app.storage.engine import WRITE

__all__ = ["upgrade"]

_SCRIPTS = Path(__file__).parent / "migrations"


async def upgrade(engine: AsyncEngine) -> None:
    """Apply every migration not yet applied (idempotent)."""
    async with engine.connect() as connection:
        connection = await connection.execution_options(**{WRITE: True})
        async with connection.begin():
            await connection.run_sync(_upgrade)


def _upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
