from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from cbi_service.auth.dependencies import READ_ANY, require_roles
from cbi_service.auth.roles import Principal
from cbi_service.kit.db import SessionDep
from cbi_service.kit.negotiation import CSV_CONTENT, csv_response, wants_csv
from cbi_service.kit.routing import StorableTextRoute
from cbi_service.kit.timeutil import IsoDate
from cbi_service.reports import service
from cbi_service.reports.schemas import PeopleReached

router = APIRouter(prefix="/v1/reports", tags=["reports"], route_class=StorableTextRoute)
Staff = Annotated[Principal, Depends(require_roles(*READ_ANY))]

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
