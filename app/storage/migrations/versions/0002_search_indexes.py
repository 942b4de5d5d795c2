"""Search indexes that hold on 100,000 rows. Sort flags on the index tables: the row holding a resource's sort value per parameter, with a
partial index per direction, so `_sort` walks an index instead of aggregating per resource; and
covering probe indexes on the range tables, so a range criterion never reads the table row; and
`id` at the end of the equality lookup indexes, so they cover a criterion's id list in id order.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# table -> (ascending sort column, descending sort column), as frozen at this revision
_SORTABLE = {
    "token_index": ("code", "code"),
    "string_index": ("norm", "norm"),
    "reference_index": ("target_id", "target_id"),
    "date_index": ("low", "high"),
    "number_index": ("low", "high"),
    "quantity_index": ("low", "high"),
    "uri_index": ("value", "value"),
}

# range tables -> the values their (type, id, param) probe index covers
_PROBE_COLUMNS: dict[str, tuple[str, ...]] = {
    "date_index": ("low", "high"),
    "number_index": ("low", "high"),
    "quantity_index": ("low", "high", "code", "system"),
}

# equality lookup indexes (type, param, *columns) that gain a trailing id
_LOOKUPS: dict[str, list[tuple[str, ...]]] = {
    "token_index": [("code", "system")],
    "string_index": [("norm",)],
    "reference_index": [("target_id", "target_type"), ("url",)],
    "uri_index": [("value",)],
    "composite_index": [("code1",)],
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    row_id = "ctid" if dialect == "postgresql" else "rowid"
    flag_true = "true" if dialect == "postgresql" else "1"
    for table, (ascending, descending) in _SORTABLE.items():
        for flag in ("sort_first", "sort_last"):
            op.add_column(table, sa.Column(flag, sa.Boolean, nullable=False, server_default=sa.false()))
        # Flag the existing rows the way the repository flags new ones: per (type, id, param), the
        # row with the lowest ascending value and the row with the highest descending value.
        for flag, column, direction in (("sort_first", ascending, "ASC"), ("sort_last", descending, "DESC")):
            op.execute(
                f"UPDATE {table} SET {flag} = {flag_true} WHERE {row_id} IN ("
                f" SELECT rid FROM (SELECT {row_id} AS rid, ROW_NUMBER() OVER ("
                f"  PARTITION BY type, id, param ORDER BY {column} {direction}) AS n"
                f"  FROM {table} WHERE {column} IS NOT NULL) ranked WHERE n = 1)"
            )
            op.create_index(
                f"ix_{table}_{flag}",
                table,
                ["type", "param", column, "id"],
                sqlite_where=sa.text(f"{flag} = 1"),
                postgresql_where=sa.text(f"{flag} = true"),
            )
    for table, values in _PROBE_COLUMNS.items():
        op.drop_index(f"ix_{table}_resource", table_name=table)
        op.create_index(f"ix_{table}_resource", table, ["type", "id", "param", *values])
    for table, lookups in _LOOKUPS.items():
        for columns in lookups:
            op.drop_index(f"ix_{table}_{'_'.join(columns)}", table_name=table)
            op.create_index(f"ix_{table}_{'_'.join(columns)}_id", table, ["type", "param", *columns, "id"])
    # the _include index covers the targets as well
    op.drop_index("ix_reference_index_id", table_name="reference_index")
    op.create_index("ix_reference_index_id_target_type_target_id", "reference_index", ["type", "param", "id", "target_type", "target_id"])


def downgrade() -> None:
    op.drop_index("ix_reference_index_id_target_type_target_id", table_name="reference_index")
    op.create_index("ix_reference_index_id", "reference_index", ["type", "param", "id"])
    for table, lookups in _LOOKUPS.items():
        for columns in lookups:
            op.drop_index(f"ix_{table}_{'_'.join(columns)}_id", table_name=table)
            op.create_index(f"ix_{table}_{'_'.join(columns)}", table, ["type", "param", *columns])
    for table in _PROBE_COLUMNS:
        op.drop_index(f"ix_{table}_resource", table_name=table)
        op.create_index(f"ix_{table}_resource", table, ["type", "id", "param"])
    for table in _SORTABLE:
        for flag in ("sort_first", "sort_last"):
            op.drop_index(f"ix_{table}_{flag}", table_name=table)
            op.drop_column(table, flag)
