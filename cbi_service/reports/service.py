"""People reached: how many distinct people received assistance, disaggregated the way regional response
plans report it; and the 5W partners file with R4V, in R4V's template (`five_w`, below).

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
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, Inexact, localcontext
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.fx import service as fx
from cbi_service.fx.schemas import plain
from cbi_service.fx.service import Rate
from cbi_service.kit.cells import SafeWriter
from cbi_service.kit.errors import UnprocessableEntity
from cbi_service.kit.money import currency_exponent
from cbi_service.kit.timeutil import day_bounds, month_bounds, year_start
from cbi_service.reports import r4v
from cbi_service.reports.repository import AGE_GROUPS, five_w_rows, people_reached_rows, reporting_programmes
from cbi_service.reports.schemas import (
    FiveWReport,
    FiveWRow,
    MissingRate,
    MonthlyPeopleReachedRow,
    MonthTotal,
    PeopleReached,
    PeopleReachedRow,
    RateUsed,
    RuleBreak,
)

CENT = Decimal("0.01")
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


# ------------------------------------------------------------------------------------------------ 5W (§16)


@dataclass(frozen=True)
class Activity:
    """A programme's identity in the 5W: programmes that share it report one activity, one row per area."""

    appealing_organisation: str | None
    implementing_partner: str | None
    sector: str
    indicator: str | None
    activity_name: str | None
    activity_description: str | None
    rmrp_activity: bool | None
    delivery_mechanism: str | None


def activity_of(programme: Any) -> Activity:
    return Activity(
        appealing_organisation=programme.appealing_organisation,
        implementing_partner=programme.implementing_partner,
        sector=r4v.SECTORS.get(programme.sector, programme.sector),
        indicator=programme.indicator,
        activity_name=programme.activity_name,
        activity_description=programme.activity_description,
        rmrp_activity=programme.rmrp_activity,
        delivery_mechanism=r4v.DELIVERY_MECHANISMS.get(programme.delivery_mechanism),
    )


def _yes_no(flag: bool | None) -> str | None:
    return None if flag is None else r4v.YES if flag else r4v.NO


def value_in_usd(paid: Mapping[str, int], rates: Mapping[str, Rate]) -> Decimal | None:
    """What was paid (minor units by currency) in US dollars, exact until one rounding to the cent (half
    up); None when a currency has no rate: a value is never made from part of what was paid."""
    if any(currency not in rates for currency in paid):
        return None
    with localcontext() as exact:  # wide enough for any BIGINT sum times any rate; Inexact would raise
        exact.prec = 100
        exact.traps[Inexact] = True
        total = sum(
            (Decimal(minor).scaleb(-currency_exponent(currency)) * rates[currency].usd_per_unit
             for currency, minor in paid.items()),
            Decimal(0),
        )  # fmt: skip
        exact.traps[Inexact] = False
        return total.quantize(CENT, rounding=ROUND_HALF_UP)


def five_w_cells(month: str, activity: Activity, counts: Any, value: Decimal | None) -> dict[str, Any]:
    """A template row: its cells by header, as the file will hold them (None for an empty cell)."""
    cells: dict[str, Any] = {
        r4v.COUNTRY: r4v.country_name(counts.country),
        r4v.ADMIN1: counts.admin1,
        r4v.ADMIN2: counts.admin2,
        r4v.APPEALING_ORGANISATION: activity.appealing_organisation,
        r4v.IMPLEMENTATION_SET_UP: r4v.YES if activity.implementing_partner else r4v.NO,
        r4v.IMPLEMENTING_PARTNER: activity.implementing_partner,
        r4v.MONTH: month,
        r4v.SECTOR: activity.sector,
        r4v.INDICATOR: activity.indicator,
        r4v.ACTIVITY_NAME: activity.activity_name,
        r4v.ACTIVITY_DESCRIPTION: activity.activity_description,
        r4v.RMRP_ACTIVITY: _yes_no(activity.rmrp_activity),
        r4v.CVA: r4v.YES,  # every programme here pays cash or vouchers
        r4v.VALUE: value,
        r4v.DELIVERY_MECHANISM: activity.delivery_mechanism,
        r4v.QUANTITY: None,
        r4v.TOTAL: counts.total,
        r4v.NEW: counts.new,
    }
    for population, column in r4v.POPULATION_COLUMNS.items():
        cells[column] = getattr(counts, population)
    for column in r4v.AGE_SEX_COLUMNS:
        cells[column] = getattr(counts, column.lower().replace(" ", "_"))
    return cells


def _row_order(cells: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple("" if cells[c] is None else str(cells[c]) for c in r4v.HEADER)


@dataclass(frozen=True)
class FiveW:
    """The report before it is rendered: its rows as cells by header, the rates used and the rule breaks."""

    report: FiveWReport
    cells: list[dict[str, Any]]


async def five_w(session: AsyncSession, month: str, country: str | None) -> FiveW:
    """The 5W of `month` (`YYYY-MM`, UTC), every row checked against R4V's rules (`r4v.RULES`).

    Definitions (§16): a person is reached in the month when an entitlement of theirs was issued in it
    (its `issued_at`, whatever became of it since); Total counts distinct people reached in the month
    under the row's activity in the row's area (where they live); New counts those of them whose first
    issue under the activity since 1 January falls in the month; the population and age/sex columns split
    New (age = the month's year − birth year, the birth year being what stays in clear, §13; sex `other`
    and `unknown` → Other). Value is the month's issued amounts at the month's rates, to the cent."""
    programmes = await reporting_programmes(session)
    numbered: dict[Activity, int] = {}
    activity_of_programme = {p.id: numbered.setdefault(activity_of(p), len(numbered)) for p in programmes}
    activities = {number: activity for activity, number in numbered.items()}
    month_start, month_end = month_bounds(month)
    counted = await five_w_rows(
        session,
        programme_ids=list(activity_of_programme),
        activities=list(activity_of_programme.values()),
        month_start=month_start,
        month_end=month_end,
        year_start=year_start(month),
        country=country,
    )
    paid = [dict(zip(r.currencies or [], r.minors or [], strict=True)) for r in counted]
    currencies = sorted({currency for amounts in paid for currency in amounts})
    rates = await fx.rates_for(session, month, currencies)
    rows = [
        (five_w_cells(month, activities[r.activity], r, value_in_usd(amounts, rates)), r.activity)
        for r, amounts in zip(counted, paid, strict=True)
    ]
    rows.sort(key=lambda row: _row_order(row[0]))
    programmes_of: dict[int, list[uuid.UUID]] = {}
    for programme_id, number in activity_of_programme.items():
        programmes_of.setdefault(number, []).append(programme_id)
    breaks = [
        RuleBreak(
            row=index,
            rule=rule.code,
            rule_text=rule.text,
            columns=list(rule.columns),
            problem=problem,
            programme_ids=programmes_of[number],
        )
        for index, (cells, number) in enumerate(rows)
        for rule, problem in r4v.broken_rules(cells)
    ]
    report = FiveWReport(
        month=month,
        country=country,
        header=list(r4v.HEADER),
        hxl=[r4v.HXL[c] for c in r4v.HEADER],
        rows=[FiveWRow.model_validate(_json_cells(cells)) for cells, _ in rows],
        exchange_rates=[
            RateUsed(
                currency=rate.currency,
                month=rate.month,
                usd_per_unit=plain(rate.usd_per_unit),
                source=rate.source,
                recorded_at=rate.recorded_at,
            )
            for rate in (rates[c] for c in currencies if c in rates)
        ],
        missing_exchange_rates=[MissingRate(currency=c, month=month) for c in currencies if c not in rates],
        passes_quality_rules=not breaks,
        rule_breaks=breaks,
    )
    return FiveW(report, [cells for cells, _ in rows])


def _json_cells(cells: Mapping[str, Any]) -> dict[str, Any]:
    value = cells[r4v.VALUE]
    return {**cells, r4v.VALUE: None if value is None else str(value)}
