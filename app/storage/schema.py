"""Tables: the current version of each resource, every version ever written, and one search index
table per search-parameter type (rows extracted at write time, replaced on every new version).

The schema itself is created by the Alembic migrations in `migrations/`; these objects describe it
for queries.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    false,
    true,
)

__all__ = [
    "INDEX_TABLES",
    "SORT_COLUMNS",
    "composite_index",
    "date_index",
    "metadata",
    "number_index",
    "quantity_index",
    "reference_index",
    "resource",
    "resource_version",
    "string_index",
    "token_index",
    "uri_index",
]

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
    Index("ix_resource_type_last_updated", "type", "last_updated"),
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


# The value a resource sorts by for one parameter, per index table: ascending by the lowest value,
# descending by the highest. At write time the row holding it is flagged (`sort_first` /
# `sort_last`), so `_sort` walks a partial index in order instead of aggregating per resource.
SORT_COLUMNS: dict[str, tuple[str, str]] = {
    "token_index": ("code", "code"),
    "string_index": ("norm", "norm"),
    "reference_index": ("target_id", "target_id"),
    "date_index": ("low", "high"),
    "number_index": ("low", "high"),
    "quantity_index": ("low", "high"),
    "uri_index": ("value", "value"),
}
# Sorting by a reference is rare, and every reference written would pay for its partial indexes
# (three an AuditEvent): it reads each match's flagged row and sorts instead (migration 0005).
_SORTED_WITHOUT_INDEX = frozenset({"reference_index"})


# Range criteria probe each candidate through (type, id, param): for the range tables that index
# also holds the values, so a probe never reads the table row.
_PROBE_COLUMNS: dict[str, tuple[str, ...]] = {
    "date_index": ("low", "high"),
    "number_index": ("low", "high"),
    "quantity_index": ("low", "high", "code", "system"),
}


# Equality lookups end in `id`: they cover the criterion's id list (no table reads) and return it in
# id order, which the default sort by id then merges without sorting.
def _index_table(name: str, *columns: Column[object], lookups: tuple[tuple[str, ...], ...]) -> Table:
    """An index table: (type, id, param) plus its value columns, indexed for lookup and for clean-up,
    and (for sortable types) the sort flags, with one partial index per sort direction to walk."""
    sortable = name in SORT_COLUMNS
    flags = (
        [Column("sort_first", Boolean, nullable=False, server_default=false()), Column("sort_last", Boolean, nullable=False, server_default=false())]
        if sortable
        else []
    )
    table = Table(
        name,
        metadata,
        Column("type", String(64), nullable=False),
        Column("id", String(64), nullable=False),
        Column("param", String(64), nullable=False),
        *columns,
        *flags,
        Index(f"ix_{name}_resource", "type", "id", "param", *_PROBE_COLUMNS.get(name, ())),
        *(Index(f"ix_{name}_{'_'.join(cols)}", "type", "param", *cols) for cols in lookups),
    )
    if sortable and name not in _SORTED_WITHOUT_INDEX:
        ascending, descending = SORT_COLUMNS[name]
        for flag, column in (("sort_first", ascending), ("sort_last", descending)):
            predicate = table.c[flag] == true()
            Index(
                f"ix_{name}_{flag}",
                table.c.type,
                table.c.param,
                table.c[column],
                table.c.id,
                sqlite_where=predicate,
                postgresql_where=predicate,
            )
    return table


token_index = _index_table(
    "token_index",
    Column("system", String(255)),
    Column("code", String(255)),
    Column("text", String(255)),
    lookups=(("code", "system", "id"),),
)
string_index = _index_table(
    "string_index",
    Column("norm", String(255), nullable=False),
    Column("exact", String(255), nullable=False),
    lookups=(("norm", "id"),),
)
reference_index = _index_table(
    "reference_index",
    Column("target_type", String(64)),
    Column("target_id", String(64)),
    Column("url", String(255)),
    # (type, param, id, ...) serves _include; it must cover the targets too, or planners prefer
    # scanning the covering target index over seeking the include's id list
    lookups=(("target_id", "target_type", "id"), ("url", "id"), ("id", "target_type", "target_id")),
)
date_index = _index_table(
    "date_index",
    Column("low", DateTime(timezone=False), nullable=False),
    Column("high", DateTime(timezone=False), nullable=False),
    lookups=(),  # range criteria probe each candidate through the (type, id, param) index
)
number_index = _index_table(
    "number_index",
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    lookups=(),
)
quantity_index = _index_table(
    "quantity_index",
    Column("system", String(255)),
    Column("code", String(255)),
    Column("low", Float, nullable=False),
    Column("high", Float, nullable=False),
    lookups=(),
)
uri_index = _index_table("uri_index", Column("value", String(255), nullable=False), lookups=(("value", "id"),))
composite_index = _index_table(
    "composite_index",
    Column("system1", String(255)),
    Column("code1", String(255)),
    Column("system2", String(255)),
    Column("code2", String(255)),
    Column("num_low", Float),
    Column("num_high", Float),
    Column("date_low", DateTime(timezone=False)),
    Column("date_high", DateTime(timezone=False)),
    Column("text", String(255)),
    lookups=(("code1", "id"),),
)

INDEX_TABLES = {
    "tokens": token_index,
    "strings": string_index,
    "references": reference_index,
    "dates": date_index,
    "numbers": number_index,
    "quantities": quantity_index,
    "uris": uri_index,
    "composites": composite_index,
}
