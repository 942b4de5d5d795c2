"""Compile a `SearchQuery` to SQLAlchemy Core with bound parameters; needs no session.

One function per parameter type. Each criterion becomes an EXISTS over that type's index table,
correlated with the id of the resource being filtered, so chains and `_has` reuse the same code on
another resource type.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)

from app.fhir.outcome import ErrorCategory, FhirError
from app.fhir.search_query import Criterion, Include, SearchQuery, SortKey, TokenValue
from app.fhir.search_values import DateRange, NumberRange, normalise, now_utc
from app.storage.schema import (
    composite_index,
    date_index,
    number_index,
    quantity_index,
    reference_index,
    resource,
    string_index,
    token_index,
    uri_index,
)

__all__ = ["count_statement", "forward_include_statement", "page_statement", "reverse_include_statement"]

Condition = ColumnElement[bool]
_TABLES: dict[str, Table] = {
    "token": token_index,
    "string": string_index,
    "reference": reference_index,
    "date": date_index,
    "number": number_index,
    "quantity": quantity_index,
    "uri": uri_index,
    "composite": composite_index,
}


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# Range criteria (dates, numbers, quantities) usually match a large share of a type: probing each
# candidate row is cheaper than materialising every matching id. Equality criteria (tokens,
# references, strings, uris) are usually selective: starting from the index lookup is cheaper.
_PROBED = frozenset({date_index.name, number_index.name, quantity_index.name})


def _having(table: Table, resource_type: str, id_column: ColumnElement[Any], param: str, *conditions: Condition) -> Condition:
    """The resource has an index row for `param` that meets the conditions."""
    if table.name in _PROBED:
        return exists().where(table.c.type == resource_type, table.c.id == id_column, table.c.param == param, *conditions)
    return id_column.in_(select(table.c.id).where(table.c.type == resource_type, table.c.param == param, *conditions))


def criterion_condition(criterion: Criterion, resource_type: str, id_column: ColumnElement[Any]) -> Condition:
    """The criterion as a condition on the resource of `resource_type` whose id is `id_column`."""
    if criterion.kind == "id":
        return id_column.in_(criterion.values)
    if criterion.kind == "or":
        return or_(*(criterion_condition(c, resource_type, id_column) for c in criterion.values))
    if criterion.kind == "and":
        return and_(*(criterion_condition(c, resource_type, id_column) for c in criterion.values))
    if criterion.kind == "chain":
        return _chain(criterion, resource_type, id_column)
    if criterion.kind == "has":
        return _has(criterion, resource_type, id_column)
    table = _TABLES[criterion.kind]
    if criterion.modifier == "missing":
        present = _having(table, resource_type, id_column, criterion.param)
        return not_(present) if criterion.values[0] else present
    value_condition = _VALUE_CONDITIONS[criterion.kind]
    matches = or_(*(value_condition(table, value, criterion.modifier) for value in criterion.values))
    if criterion.kind == "token" and criterion.modifier == "not":
        return not_(_having(table, resource_type, id_column, criterion.param, matches))
    return _having(table, resource_type, id_column, criterion.param, matches)


def _token(table: Table, value: Any, modifier: str | None) -> Condition:
    if modifier == "text":
        return table.c.text.like(_like_prefix(normalise(value)) + "%", escape="\\")
    return _token_match(table.c.system, table.c.code, value)


def _token_match(system_column: ColumnElement[Any], code_column: ColumnElement[Any], value: TokenValue) -> Condition:
    parts: list[Condition] = []
    if value.code is not None:
        parts.append(code_column == value.code)
    if value.no_system:
        parts.append(system_column.is_(None))
    elif value.system is not None:
        parts.append(system_column == value.system)
    return and_(*parts) if parts else true()


def _string(table: Table, value: str, modifier: str | None) -> Condition:
    if modifier == "exact":
        return table.c.exact == value
    pattern = _like_prefix(normalise(value)) + "%"
    return table.c.norm.like("%" + pattern if modifier == "contains" else pattern, escape="\\")


def _reference(table: Table, value: tuple[str | None, str | None, str | None], _modifier: str | None) -> Condition:
    target_type, target_id, url = value
    local = and_(table.c.target_id == target_id, *([table.c.target_type == target_type] if target_type else []))
    if url is None:
        return local
    return or_(table.c.url == url, local) if target_id else table.c.url == url


def _uri(table: Table, value: str, modifier: str | None) -> Condition:
    if modifier == "below":
        return table.c.value.like(_like_prefix(value) + "%", escape="\\")
    if modifier == "above":
        return literal(value).like(table.c.value + "%")
    return table.c.value == value


def range_condition(low: ColumnElement[Any], high: ColumnElement[Any], prefix: str, wanted: DateRange | NumberRange) -> Condition:
    """Compare a target range [low, high] with the search value per the prefix (R4 search rules).

    Dates compare ranges (gt: the target reaches past the end of the searched range); numbers and
    quantities use their implicit precision for eq/ne and their value for the other prefixes.
    """
    if prefix == "ap":
        return _approximately(low, high, wanted)
    if isinstance(wanted, DateRange):
        start: Any = wanted.low
        end: Any = wanted.high
        contained = and_(low >= start, high <= end)
    else:
        start = end = wanted.value
        contained = and_(low >= wanted.low, high < wanted.high)
    comparisons: dict[str, Condition] = {
        "eq": contained,
        "ne": not_(contained),
        "gt": high > end,
        "lt": low < start,
        "ge": or_(high > end, contained) if isinstance(wanted, DateRange) else high >= end,
        "le": or_(low < start, contained) if isinstance(wanted, DateRange) else low <= start,
        "sa": low > end,
        "eb": high < start,
    }
    return comparisons[prefix]


def _approximately(low: ColumnElement[Any], high: ColumnElement[Any], wanted: DateRange | NumberRange) -> Condition:
    """ap: overlaps the value widened by 10 % (of the distance from now, for dates)."""
    if isinstance(wanted, DateRange):
        gap = max(abs(now_utc() - wanted.low), timedelta(days=1)) * 0.1
        start, end = wanted.low - gap, wanted.high + gap
        return and_(low <= end, high >= start)
    margin = abs(wanted.value) * 0.1
    return and_(low <= wanted.value + margin, high >= wanted.value - margin)


def _date(table: Table, value: tuple[str, DateRange, None, None], _modifier: str | None) -> Condition:
    return range_condition(table.c.low, table.c.high, value[0], value[1])


def _number(table: Table, value: tuple[str, NumberRange, None, None], _modifier: str | None) -> Condition:
    return range_condition(table.c.low, table.c.high, value[0], value[1])


def _quantity(table: Table, value: tuple[str, NumberRange, str | None, str | None], _modifier: str | None) -> Condition:
    prefix, wanted, system, code = value
    unit = [table.c.code == code] if code else []
    unit += [table.c.system == system] if system else []
    return and_(range_condition(table.c.low, table.c.high, prefix, wanted), *unit)


def _composite(table: Table, value: tuple[TokenValue, Any], _modifier: str | None) -> Condition:
    first, second = value
    head = _token_match(table.c.system1, table.c.code1, first)
    if isinstance(second, TokenValue):
        return and_(head, _token_match(table.c.system2, table.c.code2, second))
    if isinstance(second, tuple):
        prefix, wanted, system, code = second
        if isinstance(wanted, DateRange):
            return and_(head, range_condition(table.c.date_low, table.c.date_high, prefix, wanted))
        unit = [table.c.code2 == code] if code else []
        unit += [table.c.system2 == system] if system else []
        return and_(head, range_condition(table.c.num_low, table.c.num_high, prefix, wanted), *unit)
    return and_(head, table.c.text.like(_like_prefix(normalise(second)) + "%", escape="\\"))


_VALUE_CONDITIONS: dict[str, Callable[[Table, Any, str | None], Condition]] = {
    "token": _token,
    "string": _string,
    "reference": _reference,
    "date": _date,
    "number": _number,
    "quantity": _quantity,
    "uri": _uri,
    "composite": _composite,
}


def _chain(criterion: Criterion, resource_type: str, id_column: ColumnElement[Any]) -> Condition:
    link = reference_index.alias("chain_link")
    per_target = [
        and_(link.c.target_type == target, criterion_condition(inner, target, link.c.target_id))
        for target, inner in zip(criterion.target_types, criterion.values, strict=True)
    ]
    return id_column.in_(
        select(link.c.id).where(link.c.type == resource_type, link.c.param == criterion.param, or_(*per_target))
    )


def _has(criterion: Criterion, resource_type: str, id_column: ColumnElement[Any]) -> Condition:
    link = reference_index.alias("has_link")
    assert criterion.source_type is not None
    return id_column.in_(
        select(link.c.target_id).where(
            link.c.type == criterion.source_type,
            link.c.param == criterion.param,
            link.c.target_type == resource_type,
            criterion_condition(criterion.values[0], criterion.source_type, link.c.id),
        )
    )


def _conditions(query: SearchQuery) -> list[Condition]:
    return [
        resource.c.type == query.resource_type,
        resource.c.deleted == false(),
        *(criterion_condition(c, query.resource_type, resource.c.id) for c in query.criteria),
    ]


_SORT_COLUMNS = {
    "string": ("norm", "norm"),
    "token": ("code", "code"),
    "date": ("low", "high"),
    "number": ("low", "high"),
    "quantity": ("low", "high"),
    "uri": ("value", "value"),
    "reference": ("target_id", "target_id"),
}


def sort_expression(key: SortKey, resource_type: str) -> Any:
    """The value a resource sorts by: its lowest value ascending, its highest descending."""
    if key.param == "_id":
        return resource.c.id
    if key.param == "_lastUpdated":
        return resource.c.last_updated
    table = _TABLES[key.kind]
    ascending_column, descending_column = _SORT_COLUMNS[key.kind]
    aggregate = func.max(table.c[descending_column]) if key.descending else func.min(table.c[ascending_column])
    return (
        select(aggregate)
        .where(table.c.type == resource_type, table.c.id == resource.c.id, table.c.param == key.param)
        .scalar_subquery()
    )


def _beyond_cursor(keys: Sequence[tuple[Any, bool]], values: Sequence[Any], edge_id: str, id_descending: bool, forward: bool) -> Condition:
    """Rows after (forward) or before the cursor in (keys..., id) order with nulls last: keyset paging."""
    alternatives: list[Condition] = []
    equal_so_far: list[Condition] = []
    for (expression, descending), value in zip(keys, values, strict=True):
        if value is None:  # nulls sort last: nothing is after a null, every value is before it
            beyond: Condition = false() if forward else expression.is_not(None)
            same: Condition = expression.is_(None)
        else:
            later = expression < value if descending else expression > value
            beyond = or_(later, expression.is_(None)) if forward else and_(not_(later), expression != value)
            same = expression == value
        alternatives.append(and_(*equal_so_far, beyond))
        equal_so_far.append(same)
    id_later = resource.c.id < edge_id if id_descending else resource.c.id > edge_id
    id_earlier = resource.c.id > edge_id if id_descending else resource.c.id < edge_id
    alternatives.append(and_(*equal_so_far, id_later if forward else id_earlier))
    return or_(*alternatives)


def _sort_keys(query: SearchQuery) -> tuple[list[SortKey], bool]:
    """The keys before any `_id` key (which decides every tie after it), and the id direction."""
    keys: list[SortKey] = []
    for key in query.sort:
        if key.param == "_id":
            return keys, key.descending
        keys.append(key)
    return keys, False


def page_statement(query: SearchQuery) -> tuple[Select[Any], list[str]]:
    """One page next to the cursor, one row more than the page (to tell whether another follows);
    also the kinds of the sort values selected after the resource columns (for the next cursor).

    A backward cursor ("p") selects in reverse order: the caller reverses the rows.
    """
    sort_keys, id_descending = _sort_keys(query)
    keys = [(sort_expression(k, query.resource_type), k.descending) for k in sort_keys]
    kinds = [k.kind for k in sort_keys]
    conditions = _conditions(query)
    forward = True
    if query.cursor is not None:
        direction, *values, edge_id = query.cursor
        if direction not in ("n", "p") or len(values) != len(keys):
            raise FhirError(ErrorCategory.INVALID_PARAMETER, "The _cursor does not fit this search", ("_cursor",))
        forward = direction == "n"
        restored = [_restore(kind, v) for kind, v in zip(kinds, values, strict=True)]
        conditions.append(_beyond_cursor(keys, restored, str(edge_id), id_descending, forward))
    order = [
        (e.desc() if d else e.asc()).nulls_last() if forward else (e.asc() if d else e.desc()).nulls_first()
        for e, d in keys
    ]
    order.append(resource.c.id.desc() if id_descending == forward else resource.c.id.asc())
    statement = (
        select(
            resource.c.type,
            resource.c.id,
            resource.c.version,
            resource.c.last_updated,
            resource.c.deleted,
            resource.c.content,
            *(e.label(f"sort_{i}") for i, (e, _) in enumerate(keys)),
        )
        .where(*conditions)
        .order_by(*order)
        .limit(query.count + 1)
    )
    return statement, kinds


def _restore(kind: str, value: Any) -> Any:
    """A cursor value back in the column's type (dates travel as ISO strings)."""
    if kind == "date" and isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise FhirError(ErrorCategory.INVALID_PARAMETER, "The _cursor is not one this server issued", ("_cursor",)) from None
    return value


def count_statement(query: SearchQuery) -> Select[Any]:
    return select(func.count()).select_from(resource).where(*_conditions(query))


def forward_include_statement(include: Include, source_ids: Sequence[str]) -> Select[Any]:
    """(type, id) of the resources that `source_ids` point at through the include's parameter."""
    conditions = [
        reference_index.c.type == include.source_type,
        reference_index.c.param == include.param,
        reference_index.c.id.in_(source_ids),
    ]  # rows without a local target (absolute URLs) come back with a null id; the caller skips them
    if include.target_type:
        conditions.append(reference_index.c.target_type == include.target_type)
    # No DISTINCT (the caller keeps a set): with it SQLite scans the covering target index instead.
    return select(reference_index.c.target_type, reference_index.c.target_id).where(*conditions)


def reverse_include_statement(include: Include, target_type: str, target_ids: Sequence[str]) -> Select[Any]:
    """(type, id) of the `include.source_type` resources that point at the targets."""
    return (
        select(reference_index.c.type, reference_index.c.id)
        .where(
            reference_index.c.type == include.source_type,
            reference_index.c.param == include.param,
            reference_index.c.target_type == target_type,
            reference_index.c.target_id.in_(target_ids),
        )
        .distinct()
    )
