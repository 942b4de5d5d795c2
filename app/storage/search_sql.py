"""Compile a `SearchQuery` to SQLAlchemy Core with bound parameters; needs no session."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, false, func, or_, select

from app.fhir.search_query import SearchQuery, TokenCriterion, TokenValue
from app.storage.schema import resource, token_index

__all__ = ["count_statement", "page_statement"]


def _conditions(query: SearchQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [resource.c.type == query.resource_type, resource.c.deleted == false()]
    conditions += [resource.c.id.in_(group) for group in query.ids]
    conditions += [_token(query.resource_type, criterion) for criterion in query.tokens]
    return conditions


def _token(resource_type: str, criterion: TokenCriterion) -> ColumnElement[bool]:
    return exists().where(
        token_index.c.type == resource_type,
        token_index.c.id == resource.c.id,
        token_index.c.param == criterion.param,
        or_(*(_token_value(value) for value in criterion.values)),
    )


def _token_value(value: TokenValue) -> ColumnElement[bool]:
    parts: list[ColumnElement[bool]] = []
    if value.code is not None:
        parts.append(token_index.c.code == value.code)
    if value.no_system:
        parts.append(token_index.c.system.is_(None))
    elif value.system is not None:
        parts.append(token_index.c.system == value.system)
    return and_(*parts)


def page_statement(query: SearchQuery) -> Select[Any]:
    """One page in id order, after the cursor; one row more than the page to tell if another follows."""
    conditions = _conditions(query)
    if query.after is not None:
        conditions.append(resource.c.id > query.after)
    return (
        select(
            resource.c.type,
            resource.c.id,
            resource.c.version,
            resource.c.last_updated,
            resource.c.deleted,
            resource.c.content,
        )
        .where(*conditions)
        .order_by(resource.c.id)
        .limit(query.count + 1)
    )


def count_statement(query: SearchQuery) -> Select[Any]:
    return select(func.count()).select_from(resource).where(*_conditions(query))
