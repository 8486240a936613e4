"""`/console`: server-rendered pages for programme staff, approvers and auditors (contract §17).

Pages are HTML (left out of the OpenAPI document); forms post back here and work without JavaScript,
each with its CSRF token; a successful post answers 303 to the page that shows its effect. A page
admits the roles of the API route it stands for (`access`), and what it does goes through the same
domain service as that route (`service`), so maker-checker, segregation of duties and masking hold
exactly as in the API.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, UploadFile
from fastapi.responses import Response

from cbi_service.auth.roles import Role
from cbi_service.console import access, i18n, service, sessions
from cbi_service.console.i18n import N_
from cbi_service.console.web import (
    PREFIX,
    SIGN_IN,
    Console,
    ConsoleRoute,
    VisitorDep,
    file_field,
    safe_next,
    see_other,
    staff,
    text_field,
)
from cbi_service.kit.db import SessionDep
from cbi_service.kit.errors import UnprocessableEntity
from cbi_service.kit.streaming import ClosingStreamingResponse
from cbi_service.kit.timeutil import YEAR_MONTH

router = APIRouter(prefix=PREFIX, route_class=ConsoleRoute, include_in_schema=False)

Staff = Annotated[Console, Depends(staff())]
Approver = Annotated[Console, Depends(staff(*access.APPROVE))]
Releaser = Annotated[Console, Depends(staff(*access.RELEASE))]
LedgerReader = Annotated[Console, Depends(staff(*access.LEDGER))]
AuditReader = Annotated[Console, Depends(staff(*access.AUDIT))]
AdjudicationReader = Annotated[Console, Depends(staff(*access.ADJUDICATIONS))]
Adjudicator = Annotated[Console, Depends(staff(*access.DECIDE))]
ImportReader = Annotated[Console, Depends(staff(*access.IMPORTS))]
Uploader = Annotated[Console, Depends(staff(*access.UPLOAD))]
Verifier = Annotated[Console, Depends(staff(*access.VERIFY))]
FiveWReader = Annotated[Console, Depends(staff(*access.FIVE_W))]

QueueStatus = Literal[
    "pending_approval", "approved", "processing", "draft", "completed", "rejected", "cancelled", "all"
]
BatchDone = Literal["approve", "reject", "release"]
AdjudicationStatus = Literal["open", "decided", "withdrawn", "all"]
REFRESH_SECONDS = 5
"""How often a page showing work in progress (a batch processing, an import running) reloads itself."""
COUNTRY = r"^[A-Z]{2}$"
BLANK_OR_MONTH = f"^$|{YEAR_MONTH}"
BLANK_OR_COUNTRY = f"^$|{COUNTRY}"
"""A form's field left blank comes as an empty value: it asks for the default (the last month, every country)."""
UPLOAD_ROUTES = (f"{PREFIX}/imports", f"{PREFIX}/ledger/verify")
"""Console routes taking a file: the upload body limit applies to them, not the form one."""


# Signing in and out ---------------------------------------------------------------------------------------------


@router.get("")
async def home(console: Staff) -> Response:
    """The page each kind of visitor starts from."""
    if console.has(Role.approver, Role.finance, Role.programme_officer):
        return see_other(f"{PREFIX}/batches")
    if console.has(Role.registrar):
        return see_other(f"{PREFIX}/adjudications")
    return see_other(f"{PREFIX}/programmes")


@router.get("/sign-in")
async def sign_in_page(console: VisitorDep, next_page: Annotated[str | None, Query(alias="next")] = None) -> Response:
    if console.visit.principal is not None:
        return see_other(safe_next(next_page))
    return console.render("sign_in.html", next_page=safe_next(next_page), failed=False)


@router.post("/sign-in")
async def sign_in(console: VisitorDep, session: SessionDep) -> Response:
    """Exchange an API key for a session cookie; the key itself is kept nowhere."""
    form = await console.form()
    target = safe_next(text_field(form, "next"))
    visit = await sessions.sign_in(session, text_field(form, "api_key") or "")
    if visit is None:
        return console.render("sign_in.html", http_status=401, next_page=target, failed=True)
    console.cookie = await sessions.cookie_value(session, visit)
    return see_other(target)


@router.post("/sign-out")
async def sign_out(console: VisitorDep, session: SessionDep) -> Response:
    await console.form()
    await sessions.sign_out(session, console.visit)
    console.cookie = None
    response = see_other(SIGN_IN)
    response.delete_cookie(sessions.COOKIE, path=PREFIX)
    return response


@router.get("/language")
async def language(
    request: Request, to: Literal["es", "en"], next_page: Annotated[str | None, Query(alias="next")] = None
) -> Response:
    """The language switch: a preference cookie, then back to the page it was pressed on."""
    response = see_other(safe_next(next_page))
    response.set_cookie(
        i18n.LANGUAGE_COOKIE, to, max_age=365 * 24 * 3600, path=PREFIX, httponly=True, samesite="lax",
        secure=request.url.scheme == "https" or request.app.state.settings.env == "production",
    )  # fmt: skip
    return response


# Payment batches ------------------------------------------------------------------------------------------------


@router.get("/batches")
async def batch_queue(
    console: Staff,
    session: SessionDep,
    status: QueueStatus = "pending_approval",
    after: uuid.UUID | None = None,
) -> Response:
    """The approvals queue: batches awaiting approval first, any other status on request."""
    items, programmes, next_after = await service.batch_queue(session, None if status == "all" else status, after)
    return console.render(
        "batches.html", batches=items, programmes=programmes, status=status, next_after=next_after,
        statuses=[*service.QUEUE_STATUSES, "all"],
    )  # fmt: skip


@router.get("/batches/{batch_id}")
async def batch_page(
    console: Staff, session: SessionDep, batch_id: uuid.UUID, done: BatchDone | None = None
) -> Response:
    """Totals, counts per status, who was left out and why, who approved and when, and the buttons this
    visitor may press; while the batch is processing the page reloads itself to show progress."""
    review = await service.batch_review(session, console.principal, batch_id)
    return console.render("batch.html", review=review, done=done, refresh=REFRESH_SECONDS if review.processing else 0)


@router.post("/batches/{batch_id}/approvals")
async def decide_batch(console: Approver, session: SessionDep, batch_id: uuid.UUID) -> Response:
    form = await console.form()
    decision = text_field(form, "decision")
    await service.decide_batch(session, console.principal, batch_id, decision, text_field(form, "comment"))
    return see_other(f"{PREFIX}/batches/{batch_id}?done={decision}")


@router.post("/batches/{batch_id}/release")
async def release_batch(console: Releaser, session: SessionDep, batch_id: uuid.UUID) -> Response:
    await console.form()
    await service.release_batch(session, console.principal, batch_id)
    return see_other(f"{PREFIX}/batches/{batch_id}?done=release")


# Auditors' pages ------------------------------------------------------------------------------------------------


@router.get("/programmes")
async def balances(console: Staff, session: SessionDep, after: uuid.UUID | None = None) -> Response:
    rows, next_after = await service.programme_balances(session, after)
    return console.render("balances.html", rows=rows, next_after=next_after, parts=service.BALANCE_PARTS)


@router.get("/ledger/trial-balance")
async def trial_balance(console: LedgerReader, session: SessionDep, as_of: date | None = None) -> Response:
    """The trial balance now, or at the end of a day (UTC)."""
    moment = datetime.combine(as_of, time.max, UTC) if as_of is not None else None
    trial = await service.trial_balance(session, moment)
    return console.render("trial_balance.html", trial=trial, as_of=as_of)


@router.get("/reports/people-reached")
async def people_reached(
    console: Staff,
    session: SessionDep,
    start: Annotated[date | None, Query(alias="from")] = None,
    end: Annotated[date | None, Query(alias="to")] = None,
) -> Response:
    """People reached in a period (this year so far unless asked), as tables and charts."""
    today = datetime.now(UTC).date()
    end = end or today
    start = start or date(end.year, 1, 1)
    page = await service.people_reached(session, start, end)
    return console.render("people_reached.html", page=page, start=start, end=end)


@router.get("/reports/5w")
async def five_w(
    console: FiveWReader,
    session: SessionDep,
    month: Annotated[str | None, Query(pattern=BLANK_OR_MONTH)] = None,
    country: Annotated[str | None, Query(pattern=BLANK_OR_COUNTRY)] = None,
) -> Response:
    """The 5W of a month (the last full month, UTC, unless asked) as `GET /v1/reports/5w` makes it: its rows,
    the quality rules each breaks, the exchange rates used or missing, charts of the new people, and the
    files to upload once every row passes."""
    if not month:
        month = (datetime.now(UTC).date().replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    page = await service.five_w(session, month, country or None)
    return console.render("five_w.html", page=page, month=month, country=country or "")


@router.get("/reports/5w/file")
async def five_w_file(
    console: FiveWReader,
    session: SessionDep,
    month: Annotated[str, Query(pattern=YEAR_MONTH)],
    file_format: Annotated[Literal["csv", "xlsx"], Query(alias="format")],
    country: Annotated[str | None, Query(pattern=BLANK_OR_COUNTRY)] = None,
    hxl: bool = False,
) -> Response:
    """The API's 5W file (CSV or XLSX, optionally with the HXL row) for a browser signed in to the console,
    which holds no API key: the same service output, refused with a 409 in the same case."""
    made = await service.five_w_file(session, month, country or None, file_format, hxl=hxl)
    return Response(
        made.content,
        media_type=made.media_type,
        headers={"Content-Disposition": f'attachment; filename="{made.filename}"'},
    )


@router.get("/audit-events")
async def audit_events(
    console: AuditReader,
    session: SessionDep,
    actor_id: uuid.UUID | None = None,
    resource_type: Annotated[str | None, Query(max_length=100)] = None,
    resource_id: Annotated[str | None, Query(max_length=100)] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    start: Annotated[date | None, Query(alias="from")] = None,
    end: Annotated[date | None, Query(alias="to")] = None,
    after: uuid.UUID | None = None,
) -> Response:
    """The audit trail, oldest first, filtered by actor, resource, action and days (UTC, both included)."""
    filters = service.AuditFilters(
        actor_id=actor_id,
        resource_type=resource_type or None,
        resource_id=resource_id or None,
        action=action or None,
        occurred_from=datetime.combine(start, time.min, UTC) if start else None,
        occurred_to=datetime.combine(end + timedelta(days=1), time.min, UTC) if end else None,
    )
    events, next_after = await service.audit_events(session, filters, after)
    query = {
        "actor_id": actor_id or "", "resource_type": resource_type or "", "resource_id": resource_id or "",
        "action": action or "", "from": start or "", "to": end or "",
    }  # fmt: skip
    return console.render("audit_events.html", events=events, next_after=next_after, query=query)


# Possible duplicates --------------------------------------------------------------------------------------------


@router.get("/adjudications")
async def adjudications(
    console: AdjudicationReader,
    session: SessionDep,
    status: AdjudicationStatus = "open",
    after: uuid.UUID | None = None,
) -> Response:
    items, next_after = await service.adjudications(session, None if status == "all" else status, after)
    return console.render("adjudications.html", items=items, status=status, next_after=next_after)


@router.get("/adjudications/{adjudication_id}")
async def adjudication_page(console: AdjudicationReader, session: SessionDep, adjudication_id: uuid.UUID) -> Response:
    """The record and its possible duplicates side by side, with what matched and how much it weighed."""
    view = await service.side_by_side(
        session, console.principal, adjudication_id, "GET /console/adjudications/{adjudication_id}"
    )
    return console.render("adjudication.html", view=view)


@router.post("/adjudications/{adjudication_id}/decision")
async def decide_adjudication(console: Adjudicator, session: SessionDep, adjudication_id: uuid.UUID) -> Response:
    form = await console.form()
    await service.decide_adjudication(
        session, console.principal, adjudication_id, text_field(form, "decision"), text_field(form, "note")
    )
    return see_other(f"{PREFIX}/adjudications/{adjudication_id}")


# Imports --------------------------------------------------------------------------------------------------------


@router.get("/imports")
async def import_list(console: ImportReader, session: SessionDep, after: uuid.UUID | None = None) -> Response:
    items, next_after = await service.import_list(session, after)
    return console.render("imports.html", items=items, next_after=next_after, can_upload=console.has(*access.UPLOAD))


@router.post("/imports")
async def start_import(request: Request, console: Uploader, session: SessionDep) -> Response:
    form = await console.form()
    try:
        upload = file_field(form, "file")
        if upload is None:
            raise UnprocessableEntity(
                N_("Choose a file to import."), errors=[{"field": "file", "message": N_("required")}]
            )
        accepted = await service.start_import(
            session,
            request.app.state.settings,
            console.principal,
            UploadFile(upload.file, size=upload.size, filename=upload.filename, headers=upload.headers),
        )
    finally:
        await form.close()
    return see_other(f"{PREFIX}/imports/{accepted.id}")


@router.get("/imports/{import_id}")
async def import_page(
    console: ImportReader, session: SessionDep, import_id: uuid.UUID, after_row: int | None = Query(None, ge=0)
) -> Response:
    """Progress while the file is worked through (the page reloads itself), then the rows that failed."""
    page = await service.import_detail(session, import_id, after_row)
    running = page.imp.status in {"queued", "running"}
    return console.render("import.html", page=page, refresh=REFRESH_SECONDS if running else 0)


@router.get("/imports/{import_id}/errors.csv")
async def import_errors(request: Request, console: ImportReader, session: SessionDep, import_id: uuid.UUID) -> Response:
    """The same CSV as the API's `errors.csv`, for a browser signed in to the console."""
    rows = await service.import_errors(session, request.app.state.engine, import_id)
    return ClosingStreamingResponse(
        rows,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="import-{import_id}-errors.csv"'},
    )


# Ledger verify --------------------------------------------------------------------------------------------------


@router.get("/ledger/verify")
async def verify_page(console: Verifier) -> Response:
    return console.render("verify.html", result=None)


@router.post("/ledger/verify")
async def verify_export(console: Verifier) -> Response:
    """`cbi-service ledger verify` on an uploaded export (CSV, Parquet or XLSX), nothing stored."""
    form = await console.form()
    try:
        upload = file_field(form, "file")
        if upload is None:
            raise UnprocessableEntity(
                N_("Choose an export file."), errors=[{"field": "file", "message": N_("required")}]
            )
        fastapi_upload = UploadFile(upload.file, size=upload.size, filename=upload.filename, headers=upload.headers)
        result = await service.verify_upload(fastapi_upload, allow_gaps=text_field(form, "allow_gaps") == "on")
    finally:
        await form.close()
    return console.render("verify.html", http_status=422 if result.unreadable else 200, result=result)
