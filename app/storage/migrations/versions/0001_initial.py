"""Resources, their versions, and the token search index.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_sequence = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "resource",
        sa.Column("type", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=False), nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=True),
    )
    op.create_table(
        "resource_version",
        sa.Column("seq", _sequence, primary_key=True, autoincrement=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=False), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=True),
        sa.UniqueConstraint("type", "id", "version", name="uq_resource_version"),
    )
    op.create_index("ix_resource_version_type_seq", "resource_version", ["type", "seq"])
    op.create_table(
        "token_index",
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
        sa.Column("system", sa.String(255), nullable=True),
        sa.Column("code", sa.String(255), nullable=True),
    )
    op.create_index("ix_token_index_lookup", "token_index", ["type", "param", "code", "system"])
    op.create_index("ix_token_index_resource", "token_index", ["type", "id"])


def downgrade() -> None:
    op.drop_table("token_index")
    op.drop_table("resource_version")
    op.drop_table("resource")
