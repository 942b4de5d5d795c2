"""Resources, their versions, and the search index tables.

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
_INDEXES: dict[str, tuple[list[sa.Column[object]], tuple[tuple[str, ...], ...]]] = {
    "token_index": (
        [sa.Column("system", sa.String(255)), sa.Column("code", sa.String(255)), sa.Column("text", sa.String(255))],
        (("code", "system"),),
    ),
    "string_index": (
        [sa.Column("norm", sa.String(255), nullable=False), sa.Column("exact", sa.String(255), nullable=False)],
        (("norm",),),
    ),
    "reference_index": (
        [sa.Column("target_type", sa.String(64)), sa.Column("target_id", sa.String(64)), sa.Column("url", sa.String(255))],
        (("target_id", "target_type"), ("url",), ("id",)),
    ),
    "date_index": (
        [sa.Column("low", sa.DateTime(), nullable=False), sa.Column("high", sa.DateTime(), nullable=False)],
        (),
    ),
    "number_index": ([sa.Column("low", sa.Float, nullable=False), sa.Column("high", sa.Float, nullable=False)], ()),
    "quantity_index": (
        [
            sa.Column("system", sa.String(255)),
            sa.Column("code", sa.String(255)),
            sa.Column("low", sa.Float, nullable=False),
            sa.Column("high", sa.Float, nullable=False),
        ],
        (),
    ),
    "uri_index": ([sa.Column("value", sa.String(255), nullable=False)], (("value",),)),
    "composite_index": (
        [
            sa.Column("system1", sa.String(255)),
            sa.Column("code1", sa.String(255)),
            sa.Column("system2", sa.String(255)),
            sa.Column("code2", sa.String(255)),
            sa.Column("num_low", sa.Float),
            sa.Column("num_high", sa.Float),
            sa.Column("date_low", sa.DateTime()),
            sa.Column("date_high", sa.DateTime()),
            sa.Column("text", sa.String(255)),
        ],
        (("code1",),),
    ),
}


def upgrade() -> None:
    op.create_table(
        "resource",
        sa.Column("type", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("last_updated", sa.DateTime(), nullable=False),
        sa.Column("deleted", sa.Boolean, nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=True),
    )
    op.create_index("ix_resource_type_last_updated", "resource", ["type", "last_updated"])
    op.create_table(
        "resource_version",
        sa.Column("seq", _sequence, primary_key=True, autoincrement=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("last_updated", sa.DateTime(), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=True),
        sa.UniqueConstraint("type", "id", "version", name="uq_resource_version"),
    )
    op.create_index("ix_resource_version_type_seq", "resource_version", ["type", "seq"])
    for name, (columns, lookups) in _INDEXES.items():
        op.create_table(
            name,
            sa.Column("type", sa.String(64), nullable=False),
            sa.Column("id", sa.String(64), nullable=False),
            sa.Column("param", sa.String(64), nullable=False),
            *columns,
        )
        op.create_index(f"ix_{name}_resource", name, ["type", "id", "param"])
        for cols in lookups:
            op.create_index(f"ix_{name}_{'_'.join(cols)}", name, ["type", "param", *cols])
    op.create_index("ix_reference_index_target", "reference_index", ["target_type", "target_id"])


def downgrade() -> None:
    for name in reversed(list(_INDEXES)):
        op.drop_table(name)
    op.drop_table("resource_version")
    op.drop_table("resource")
