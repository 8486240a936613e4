"""Time values from clients (timezone-aware, within a range PostgreSQL and Python both hold) and periods."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime

EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def _bounded(value: datetime) -> datetime:
    """Convert to UTC, refusing instants whose conversion would overflow (e.g. year 1 at +14:00)."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("time is out of range") from exc
    if not EARLIEST <= utc < LATEST:
        raise ValueError("time must be between 1900 and 9999")
    return utc


AwareDatetimeQuery = Annotated[AwareDatetime, AfterValidator(_bounded)]


def day_bounds(first: date, last: date) -> tuple[datetime, datetime]:
    """[first 00:00 UTC, the day after last 00:00 UTC): the period's days as a half-open time range."""
    return datetime.combine(first, time(), UTC), datetime.combine(last + timedelta(days=1), time(), UTC)
