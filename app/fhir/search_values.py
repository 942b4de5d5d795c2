"""Values as search sees them: date ranges, numbers with their implicit precision, normalised text.

Both sides of a comparison use these: the index (values extracted from resources) and the query
(values a client sends), so matching is the same everywhere.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

__all__ = [
    "PREFIXES",
    "DateRange",
    "NumberRange",
    "date_range",
    "normalise",
    "now_utc",
    "number_range",
    "period_range",
    "split_prefix",
]

PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")

# The ends of time as a naive-UTC datetime column can hold them on SQLite and PostgreSQL alike.
LOWEST = datetime(1, 1, 1)
HIGHEST = datetime(9999, 12, 31, 23, 59, 59, 999999)

_DATE = re.compile(
    r"(?P<year>\d{4})(-(?P<month>\d{2})(-(?P<day>\d{2})"
    r"(T(?P<hour>\d{2})(:(?P<minute>\d{2})(:(?P<second>\d{2})(?P<fraction>\.\d+)?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?"
)


@dataclass(frozen=True)
class DateRange:
    """The instants a date, dateTime, instant or Period covers: [low, high], both inclusive."""

    low: datetime
    high: datetime


@dataclass(frozen=True)
class NumberRange:
    """A number and the range its written precision implies (100 → [99.5, 100.5))."""

    value: float
    low: float
    high: float


def split_prefix(value: str) -> tuple[str, str]:
    """("ge", "2026-01-01") from "ge2026-01-01"; "eq" when there is no prefix."""
    if len(value) > 2 and value[:2] in PREFIXES and not value[:2].isdigit():
        return value[:2], value[2:]
    return "eq", value


def date_range(text: str) -> DateRange | None:
    """The range a FHIR date/dateTime/instant string covers, in naive UTC; None if it is not one."""
    match = _DATE.fullmatch(text.strip())
    if match is None:
        return None
    parts = match.groupdict()
    try:
        year = int(parts["year"])
        if parts["month"] is None:
            low, high = datetime(year, 1, 1), datetime(year, 12, 31, 23, 59, 59, 999999)
        elif parts["day"] is None:
            month = int(parts["month"])
            last = calendar.monthrange(year, month)[1]
            low, high = datetime(year, month, 1), datetime(year, month, last, 23, 59, 59, 999999)
        elif parts["hour"] is None:
            day = datetime(year, int(parts["month"]), int(parts["day"]))
            low, high = day, day.replace(hour=23, minute=59, second=59, microsecond=999999)
        else:
            low = datetime(
                year,
                int(parts["month"]),
                int(parts["day"]),
                int(parts["hour"]),
                int(parts["minute"] or 0),
                int(parts["second"] or 0),
            )
            if parts["fraction"]:
                digits = parts["fraction"][1:]
                low = low.replace(microsecond=int(digits[:6].ljust(6, "0")))
                high = low
            elif parts["second"] is not None:
                high = low.replace(microsecond=999999)
            else:
                high = low + timedelta(minutes=1) - timedelta(microseconds=1)
            low, high = _to_utc(low, parts["tz"]), _to_utc(high, parts["tz"])
    except (ValueError, OverflowError):
        return None
    return DateRange(low, high)


def _to_utc(moment: datetime, zone: str | None) -> datetime:
    if zone is None or zone == "Z":
        return moment
    sign = 1 if zone[0] == "+" else -1
    offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    shifted = moment - sign * offset
    return shifted if LOWEST + offset < moment < HIGHEST - offset else moment


def period_range(start: str | None, end: str | None) -> DateRange | None:
    """A Period: an open end extends to the end of time."""
    low = date_range(start) if start else None
    high = date_range(end) if end else None
    if low is None and high is None:
        return None
    return DateRange(low.low if low else LOWEST, high.high if high else HIGHEST)


def number_range(text: str) -> NumberRange | None:
    """A decimal and its implicit precision range (half a unit of the last written digit)."""
    try:
        number = Decimal(text.strip())
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    exponent = number.as_tuple().exponent
    half = Decimal(5).scaleb(int(exponent) - 1) if isinstance(exponent, int) else Decimal(0)
    return NumberRange(float(number), float(number - half), float(number + half))


def normalise(text: str) -> str:
    """Case- and accent-insensitive form of a string, for string search."""
    if text.isascii():  # nothing to decompose, and ASCII's casefold is lower (most text: 3x faster)
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def now_utc() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
