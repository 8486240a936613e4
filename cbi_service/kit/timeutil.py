"""Time values from clients (timezone-aware, within a range PostgreSQL and Python both hold) and periods."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field

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


# RFC 3339 `date-time` and `full-date`, ASCII digits only. Pydantic alone would also read numbers and numeric
# strings ("0.5", "86400") as Unix times, so a mistyped parameter would silently mean 1970.
_DATE_TIME = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_FULL_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def _rfc3339_date_time(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _DATE_TIME.match(value):
        raise ValueError("must be an RFC 3339 timestamp with an offset, such as 2026-11-22T08:30:00Z")
    return value


def _rfc3339_full_date(value: Any) -> Any:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _FULL_DATE.match(value):
        raise ValueError("must be an RFC 3339 date, such as 2026-11-22")
    return value


AwareDatetimeQuery = Annotated[AwareDatetime, BeforeValidator(_rfc3339_date_time), AfterValidator(_bounded)]
#: A calendar date from a client: `YYYY-MM-DD` and nothing else.
IsoDate = Annotated[date, BeforeValidator(_rfc3339_full_date)]


def day_bounds(first: date, last: date) -> tuple[datetime, datetime]:
    """[first 00:00 UTC, the day after last 00:00 UTC): the period's days as a half-open time range."""
    return datetime.combine(first, time(), UTC), datetime.combine(last + timedelta(days=1), time(), UTC)


#: A calendar month from a client: `YYYY-MM`, years 1900 to 2999 (what 5W reports and exchange rates are kept by).
YEAR_MONTH = r"^(19|2[0-9])[0-9]{2}-(0[1-9]|1[0-2])$"
YearMonth = Annotated[str, Field(pattern=YEAR_MONTH, examples=["2026-11"])]


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """[the first of `month` 00:00 UTC, the first of the next month 00:00 UTC) for a `YearMonth`."""
    year, number = (int(part) for part in month.split("-"))
    start = datetime(year, number, 1, tzinfo=UTC)
    return start, datetime(year + number // 12, number % 12 + 1, 1, tzinfo=UTC)


def year_start(month: str) -> datetime:
    """1 January 00:00 UTC of the year of a `YearMonth`."""
    return datetime(int(month[:4]), 1, 1, tzinfo=UTC)
