"""Time values from clients: timezone-aware and within a range PostgreSQL and Python both hold."""

from __future__ import annotations

from datetime import UTC, datetime
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
