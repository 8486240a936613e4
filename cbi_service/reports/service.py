"""People reached: how many distinct people received assistance, disaggregated the way regional response
plans report it.

Definitions (also in the route's description):
- reached = at least one entitlement issued (its `issued_at`) within the period; `from` and `to` are
  calendar dates in UTC, both included;
- each person counts once per row: once in the period, once in each month they were reached, however
  many payments they received. A person reached by programmes of two sectors appears in both sectors'
  rows, so rows add up to at least `people_reached`; the totals are counted on their own;
- country and admin1 are where the person lives (their registered location); sector is the programme's;
- the age group (0-5, 6-11, 12-17, 18-59, 60+) is the age on the day of the person's first issue in the
  period, and in the monthly rows on the day of their first issue in that month.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.kit.cells import SafeWriter
from cbi_service.kit.errors import UnprocessableEntity
from cbi_service.kit.timeutil import day_bounds
from cbi_service.reports.repository import AGE_GROUPS, people_reached_rows
from cbi_service.reports.schemas import MonthlyPeopleReachedRow, MonthTotal, PeopleReached, PeopleReachedRow

CSV_COLUMNS = ("scope", "month", "country", "admin1", "sector", "sex", "age_group", "people")


def _order(row: Any) -> tuple[Any, ...]:
    age = AGE_GROUPS.index(row.age_group) if row.age_group else -1
    return (row.month or "", row.country or "", row.admin1 or "", row.sector or "", row.sex or "", age)


async def people_reached(session: AsyncSession, period_start: date, period_end: date) -> PeopleReached:
    if period_end < period_start:
        raise UnprocessableEntity("Empty period.", errors=[{"field": "to", "message": "must not be before from"}])
    if period_end >= date.max:
        raise UnprocessableEntity("Period out of range.", errors=[{"field": "to", "message": "out of range"}])
    start, end = day_bounds(period_start, period_end)
    rows = await people_reached_rows(session, start, end)
    by_scope: dict[str, list[Any]] = {"period": [], "month": [], "period_total": [], "month_total": []}
    for row in rows:
        by_scope[row.scope].append(row)
    return PeopleReached(
        period_start=period_start,
        period_end=period_end,
        people_reached=by_scope["period_total"][0].people if by_scope["period_total"] else 0,
        rows=[PeopleReachedRow.model_validate(r, from_attributes=True) for r in sorted(by_scope["period"], key=_order)],
        months=[MonthTotal(month=r.month, people=r.people) for r in sorted(by_scope["month_total"], key=_order)],
        monthly=[
            MonthlyPeopleReachedRow.model_validate(r, from_attributes=True)
            for r in sorted(by_scope["month"], key=_order)
        ],
    )


def people_reached_csv(report: PeopleReached) -> str:
    """One table: the period's rows, its total, then each month's rows and total (`scope` tells which)."""
    out = io.StringIO()
    writer = SafeWriter(out)
    writer.writerow(CSV_COLUMNS)
    lines: list[Sequence[Any]] = [
        ("period", "", r.country, r.admin1 or "", r.sector, r.sex, r.age_group, r.people) for r in report.rows
    ]
    lines.append(("period_total", "", "", "", "", "", "", report.people_reached))
    monthly: dict[str, list[MonthlyPeopleReachedRow]] = {month.month: [] for month in report.months}
    for row in report.monthly:
        monthly[row.month].append(row)
    for month in report.months:
        lines.extend(
            ("month", r.month, r.country, r.admin1 or "", r.sector, r.sex, r.age_group, r.people)
            for r in monthly[month.month]
        )
        lines.append(("month_total", month.month, "", "", "", "", "", month.people))
    writer.writerows(lines)
    return out.getvalue()
