"""CDS Hooks: feedback on cards (counted later: accepted vs overridden, override reasons) and the JWT
ids of authenticated CDS clients, kept until the token expires so a replay is refused in every
server process.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_sequence = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "cds_feedback",
        sa.Column("seq", _sequence, primary_key=True, autoincrement=True),
        sa.Column("service_id", sa.String(64), nullable=False),
        sa.Column("card", sa.String(255), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("outcome_timestamp", sa.DateTime(), nullable=False),
        sa.Column("accepted_suggestions", sa.Text(), nullable=True),
        sa.Column("reason_system", sa.String(255), nullable=True),
        sa.Column("reason_code", sa.String(255), nullable=True),
        sa.Column("reason_display", sa.String(255), nullable=True),
        sa.Column("user_comment", sa.Text(), nullable=True),
        sa.Column("client", sa.String(512), nullable=True),
        sa.Column("received", sa.DateTime(), nullable=False),
        # the same report sent twice (the spec allows it) is stored once
        sa.UniqueConstraint("service_id", "card", "outcome", "outcome_timestamp", name="uq_cds_feedback_report"),
    )
    op.create_index("ix_cds_feedback_service_outcome", "cds_feedback", ["service_id", "outcome"])
    op.create_table(
        "cds_client_jti",
        sa.Column("issuer", sa.String(512), primary_key=True),
        sa.Column("jti", sa.String(255), primary_key=True),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_cds_client_jti_expires_at", "cds_client_jti", ["expires_at"])


def downgrade() -> None:
    op.drop_table("cds_client_jti")
    op.drop_table("cds_feedback")
