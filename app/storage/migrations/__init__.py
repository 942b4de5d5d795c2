"""Alembic migrations; `upgrade` brings a database to the current schema."""
