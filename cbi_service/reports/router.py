from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from cbi_service.auth.dependencies import READ_ANY, require_roles
from cbi_service.auth.roles import Principal, Role
from cbi_service.kit.db import SessionDep
from cbi_service.kit.errors import Conflict
from cbi_service.kit.negotiation import CSV_CONTENT, csv_response, wants_csv
from cbi_service.kit.routing import StorableTextRoute
from cbi_service.kit.timeutil import YEAR_MONTH, IsoDate
from cbi_service.reports import files, service
from cbi_service.reports.schemas import FiveWReport, PeopleReached

router = APIRouter(prefix="/v1/reports", tags=["reports"], route_class=StorableTextRoute)
Staff = Annotated[Principal, Depends(require_roles(*READ_ANY))]
FiveWReader = Annotated[Principal, Depends(require_roles(Role.programme_officer, Role.finance, Role.auditor))]

PEOPLE_REACHED_DESCRIPTION = """
People reached (issued at least once) between `from` and `to` (calendar dates in UTC, both included),
by country and admin1 (where the person lives), sector (the programme's), sex and age group (0-5, 6-11,
12-17, 18-59, 60+: the age on the day of the person's first issue in the period, in `monthly` on the day
of their first issue in that month), and month.

Each person counts once per row, however many payments they received; a person reached in two sectors
appears in both, so the rows can add up to more than `people_reached`, which counts distinct people (and
`months` distinct people per month). Any staff role may read it: it holds counts, never names.
`Accept: text/csv` gives one table whose `scope` column tells period rows, monthly rows and totals apart.
"""


@router.get(
    "/people-reached",
    response_model=PeopleReached,
    description=PEOPLE_REACHED_DESCRIPTION,
    responses={200: {"content": CSV_CONTENT}},
)
async def people_reached(
    request: Request,
    session: SessionDep,
    _: Staff,
    period_start: Annotated[IsoDate, Query(alias="from")],
    period_end: Annotated[IsoDate, Query(alias="to")],
) -> PeopleReached | Response:
    report = await service.people_reached(session, period_start, period_end)
    if wants_csv(request):
        return csv_response(service.people_reached_csv(report), f"people-reached-{period_start}-{period_end}.csv")
    return report


FIVE_W_DESCRIPTION = """
The 5W partners file with R4V for `month` (`YYYY-MM`, UTC), in R4V's 2025 template: one row per country,
admin1, admin2 (where the people live) and activity (programmes sharing a reporting identity are one
activity), keyed by the template's exact header (`header`; `hxl` holds the HXL hashtags).

- `Total monthly beneficiaries`: distinct people issued at least once in the month under the activity.
- `New beneficiaries of the month`: those of them issued for the first time in the calendar year under
  that activity; the five population columns and the six age/sex columns split New (age = the month's
  year − birth year; sex `other` or `unknown` → Other).
- `Value (in USD)`: the month's issued amounts at the month's rate (`POST /v1/fx-rates`), to the cent; the
  rates used are listed with their source. A currency with no rate for the month is listed in
  `missing_exchange_rates` and its rows have no value: a rate is never taken from another month.
- `Delivery mechanism`: prepaid cards → `Prepaid Card`, vouchers and paper vouchers → `Voucher`.
- Erased people (§13) still count: what the 5W counts is kept in clear.

Every row is checked against R4V's quality rules (`rule_breaks` names each rule a row breaks and the
programmes behind it). `format=csv` and `format=xlsx` give the file to upload (the XLSX laid out like R4V's,
sheet `5W - RMRP 2025`; `hxl=true` adds the hashtag row under the header) only when every row passes:
otherwise a 409 problem lists the rule breaks and missing rates, and nothing R4V would refuse is served.
"""
FiveWFormat = Literal["json", "csv", "xlsx"]


@router.get(
    "/5w",
    response_model=FiveWReport,
    description=FIVE_W_DESCRIPTION,
    responses={
        200: {"content": {**CSV_CONTENT, files.XLSX_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}}
    },
)
async def five_w(
    session: SessionDep,
    _: FiveWReader,
    month: Annotated[str, Query(pattern=YEAR_MONTH, examples=["2026-11"])],
    country: Annotated[str | None, Query(pattern=r"^[A-Z]{2}$", description="Only people living there.")] = None,
    file_format: Annotated[FiveWFormat, Query(alias="format")] = "json",
    hxl: Annotated[bool, Query(description="Add the HXL hashtag row under the header of a file.")] = False,
) -> FiveWReport | Response:
    five_w = await service.five_w(session, month, country)
    report = five_w.report
    if file_format == "json":
        return report
    if not report.passes_quality_rules:
        raise Conflict(
            f"The 5W of {month} breaks R4V's quality rules in {len({b.row for b in report.rule_breaks})} of "
            f"{len(report.rows)} rows; R4V would refuse the file, so it is not served. The JSON report shows them.",
            extra={
                "errors": [
                    {"field": f"rows[{b.row}].{b.columns[0]}", "message": f"{b.rule}: {b.problem}"}
                    for b in report.rule_breaks
                ],
                "rule_breaks": [b.model_dump(mode="json") for b in report.rule_breaks],
                "missing_exchange_rates": [m.model_dump(mode="json") for m in report.missing_exchange_rates],
            },
        )
    name = f"5w-{month}{'-' + country if country else ''}"
    if file_format == "csv":
        return csv_response(files.five_w_csv(five_w.cells, hxl=hxl), f"{name}.csv")
    return Response(
        files.five_w_xlsx(five_w.cells, hxl=hxl),
        media_type=files.XLSX_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{name}.xlsx"'},
    )
