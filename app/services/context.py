"""What every use case needs: the store, the search definitions, the clock and the id generator."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from app.fhir.search_params import SearchParameterRegistry
from app.storage.repository import Store

__all__ = ["FhirContext", "utc_now_ms"]


def utc_now_ms() -> datetime:
    """Now in UTC to the millisecond, naive: what `meta.lastUpdated` and the database both hold."""
    now = datetime.now(UTC).replace(tzinfo=None)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class FhirContext:
    store: Store
    search_parameters: SearchParameterRegistry
    clock: Callable[[], datetime] = utc_now_ms
    new_id: Callable[[], str] = field(default=lambda: str(uuid.uuid4()))
    default_count: int = 20
    max_count: int = 1000
