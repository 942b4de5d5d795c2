"""The schema migrations bring an existing database forward without losing what it holds."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.storage import migrate
from app.storage.engine import create_engine
from app.storage.schema import metadata


@pytest.fixture
async def scratch_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An empty database of the kind under test: a new SQLite file, or a new PostgreSQL schema."""
    if database_url.startswith("sqlite"):
        folder = Path(tempfile.mkdtemp(prefix="backpath-migrate-"))
        engine = create_engine(f"sqlite+aiosqlite:///{folder / 'old.db'}")
        yield engine
        await engine.dispose()
        return
    schema = f"migrate_{uuid.uuid4().hex[:8]}"
    admin = create_engine(database_url)
    async with admin.begin() as connection:
        await connection.execute(text(f"CREATE SCHEMA {schema}"))
    engine = create_engine(database_url)

    @event.listens_for(engine.sync_engine, "connect")
    def _search_path(dbapi_connection: object, _record: object) -> None:
        cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
        cursor.execute(f"SET search_path TO {schema}")
        cursor.close()

    yield engine
    await engine.dispose()
    async with admin.begin() as connection:
        await connection.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    await admin.dispose()


def _upgrade_to(connection: Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(Path(migrate.__file__).parent / "migrations"))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def test_sort_flag_migration_flags_the_rows_of_existing_resources(scratch_engine: AsyncEngine) -> None:
    async with scratch_engine.begin() as connection:
        await connection.run_sync(_upgrade_to, "0001")
        rows = [
            ("a", "1990-01-01", "1990-12-31"),
            ("a", "1980-01-01", "1980-12-31"),
            ("a", "2000-01-01", "2000-12-31"),
            ("b", "1970-01-01", "1970-12-31"),
        ]
        for resource_id, low, high in rows:
            await connection.execute(
                text("INSERT INTO date_index (type, id, param, low, high) VALUES ('Patient', :id, 'birthdate', :low, :high)"),
                {"id": resource_id, "low": datetime.fromisoformat(low), "high": datetime.fromisoformat(high)},
            )
    await migrate.upgrade(scratch_engine)
    async with scratch_engine.connect() as connection:
        flagged = (
            await connection.execute(text("SELECT id, low, sort_first, sort_last FROM date_index ORDER BY id, low"))
        ).all()
    by_row = {(row[0], row[1].year if isinstance(row[1], datetime) else int(str(row[1])[:4])): (bool(row[2]), bool(row[3])) for row in flagged}
    assert by_row == {
        ("a", 1980): (True, False),
        ("a", 1990): (False, False),
        ("a", 2000): (False, True),
        ("b", 1970): (True, True),
    }


async def test_the_migrations_build_the_indexes_the_schema_describes(scratch_engine: AsyncEngine) -> None:
    """`schema.py` describes what the migrations build: no index the queries count on is missing, and
    none is left behind that every write pays for."""
    await migrate.upgrade(scratch_engine)

    def indexes(connection: Connection) -> dict[str, set[str]]:
        found = inspect(connection)  # PostgreSQL lists a unique constraint's own index as well
        return {table.name: {ix["name"] for ix in found.get_indexes(table.name) if ix["name"] and not ix.get("duplicates_constraint")} for table in metadata.sorted_tables}

    async with scratch_engine.connect() as connection:
        built = await connection.run_sync(indexes)
    described = {table.name: {ix.name for ix in table.indexes if ix.name} for table in metadata.sorted_tables}
    assert built == described
