"""What each console page shows and does, through the same domain services the API routes call: a batch
is approved by `batches.service.decide_batch`, a duplicate decided by `beneficiaries.service
.decide_adjudication`, personal data shown through `beneficiaries.masking.present`. No rule of the API is
repeated here; the console only works out which buttons to offer, and the services refuse the rest."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from fastapi import UploadFile
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from cbi_service.accounting import service as accounting
from cbi_service.accounting.schemas import TrialBalanceOut
from cbi_service.audit.models import AuditEvent
from cbi_service.audit.repository import AuditRepository
from cbi_service.auth.roles import Principal, Role
from cbi_service.batches import service as batches
from cbi_service.batches.schemas import ApprovalCreate, BatchOut
from cbi_service.beneficiaries import imports
from cbi_service.beneficiaries import service as beneficiaries
from cbi_service.beneficiaries.masking import present
from cbi_service.beneficiaries.models import BeneficiaryImport, ImportRow
from cbi_service.beneficiaries.repository import AdjudicationRepository, BeneficiaryRepository, ImportRepository
from cbi_service.beneficiaries.router import FINISHED_IMPORTS
from cbi_service.beneficiaries.schemas import AdjudicationOut, BeneficiaryOut, DecisionIn, ImportAccepted
from cbi_service.console import charts
from cbi_service.console.i18n import N_
from cbi_service.entitlements.models import ENTITLEMENT_STATUSES, OPEN_STATUSES
from cbi_service.exports.verify import UnreadableExport, VerificationReport, verify_file
from cbi_service.kit.errors import Conflict, UnprocessableEntity, field_errors
from cbi_service.kit.negotiation import CSV_MEDIA_TYPE
from cbi_service.kit.settings import Settings
from cbi_service.programmes import service as programmes
from cbi_service.programmes.models import Programme
from cbi_service.programmes.schemas import ProgrammeBalancesOut
from cbi_service.reports import files as report_files
from cbi_service.reports import service as reports
from cbi_service.reports.schemas import FiveWReport, FiveWRow, PeopleReached, RuleBreak

PAGE_SIZE = 50
QUEUE_STATUSES = ("pending_approval", "approved", "processing", "draft", "completed", "rejected", "cancelled")
BALANCE_PARTS = ("available", "committed", "disbursed")


# Batches ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchActions:
    """The buttons a visitor is offered; the service decides again when one is pressed."""

    decide: bool
    release: bool
    why_not: str | None


@dataclass(frozen=True)
class BatchReview:
    batch: BatchOut
    programme: Programme
    actions: BatchActions
    progress: charts.Stack
    done: int
    processing: bool


async def batch_queue(
    session: AsyncSession, status: str | None, after: uuid.UUID | None
) -> tuple[list[BatchOut], dict[uuid.UUID, Programme], uuid.UUID | None]:
    """A page of batches (awaiting approval by default), their programmes, and the next page's start."""
    rows, views = await batches.list_batches(session, after_id=after, limit=PAGE_SIZE, programme_id=None, status=status)
    return views, await _programmes(session, {b.programme_id for b in views}), _next(rows, lambda b: b.id)


async def _programmes(session: AsyncSession, ids: set[uuid.UUID]) -> dict[uuid.UUID, Programme]:
    return {ident: await programmes.get_programme(session, ident) for ident in sorted(ids)}


def _next(rows: Sequence[Any], key: Any) -> Any:
    """The cursor of the next page: rows come one past the page size when there is one."""
    return key(rows[PAGE_SIZE - 1]) if len(rows) > PAGE_SIZE else None


def batch_actions(principal: Principal, batch: BatchOut) -> BatchActions:
    """Approve and reject for an approver who neither made the batch nor decided on it yet; release for
    finance who did neither (segregation of duties, as `batches.service` enforces it)."""
    approvers = {a.approver_id for a in batch.approvals}
    decide = release = False
    why_not = None
    if batch.status == "pending_approval" and Role.approver in principal.roles:
        if principal.id == batch.created_by:
            why_not = N_("You created this batch: someone else must approve it.")
        elif principal.id in approvers:
            why_not = N_("You have already decided on this batch.")
        else:
            decide = True
    if batch.status == "approved" and Role.finance in principal.roles:
        if principal.id == batch.created_by or principal.id in approvers:
            why_not = N_("You created or approved this batch: someone else must release it.")
        else:
            release = True
    return BatchActions(decide=decide, release=release, why_not=why_not)


async def batch_review(session: AsyncSession, principal: Principal, batch_id: uuid.UUID) -> BatchReview:
    batch = await batches.get_batch(session, batch_id)
    programme = await programmes.get_programme(session, batch.programme_id)
    # Settled payments fill the bar from the left, what is still under way after them.
    order = [s for s in ENTITLEMENT_STATUSES if s not in OPEN_STATUSES] + list(reversed(OPEN_STATUSES))
    counted = [(status, batch.counts.get(status, 0)) for status in order]
    total = sum(value for _, value in counted)
    done = sum(value for status, value in counted if status not in OPEN_STATUSES)
    return BatchReview(
        batch=batch,
        programme=programme,
        actions=batch_actions(principal, batch),
        progress=charts.stack(counted, total=total),
        done=done,
        processing=batch.status == "processing",
    )


async def decide_batch(
    session: AsyncSession, principal: Principal, batch_id: uuid.UUID, decision: str | None, comment: str | None
) -> BatchOut:
    return await batches.decide_batch(
        session, principal, batch_id, _valid(ApprovalCreate, {"decision": decision, "comment": comment})
    )


async def release_batch(session: AsyncSession, principal: Principal, batch_id: uuid.UUID) -> BatchOut:
    return await batches.release_batch(session, principal, batch_id)


def _valid(model: Any, data: dict[str, Any]) -> Any:
    """The form's fields as the API's own request model, or the 422 naming the fields."""
    try:
        return model.model_validate({k: v for k, v in data.items() if v is not None})
    except ValidationError as exc:
        raise UnprocessableEntity(N_("The form is not valid."), errors=field_errors(exc)) from None


# Balances, trial balance, people reached, 5W --------------------------------------------------------------------


@dataclass(frozen=True)
class ProgrammeBalance:
    programme: Programme
    balances: ProgrammeBalancesOut
    chart: charts.Stack


async def programme_balances(
    session: AsyncSession, after: uuid.UUID | None
) -> tuple[list[ProgrammeBalance], uuid.UUID | None]:
    rows = await programmes.list_programmes(session, after_id=after, limit=PAGE_SIZE, country=None, sector=None)
    shown = []
    for programme in rows[:PAGE_SIZE]:
        balances = await programmes.programme_balances(session, programme.id)
        parts = [(part, getattr(balances, part).minor) for part in BALANCE_PARTS]
        shown.append(ProgrammeBalance(programme, balances, charts.stack(parts, total=balances.funded.minor)))
    return shown, _next(rows, lambda p: p.id)


async def trial_balance(session: AsyncSession, as_of: datetime | None) -> TrialBalanceOut:
    return await accounting.trial_balance(session, as_of=as_of, programme_id=None)


@dataclass(frozen=True)
class PeopleReachedPage:
    report: PeopleReached
    by_month: charts.BarChart
    by_group: charts.BarChart
    groups: list[tuple[str, int]]


async def people_reached(session: AsyncSession, start: date, end: date) -> PeopleReachedPage:
    if end < start:
        raise UnprocessableEntity(
            N_("The period ends before it starts."), errors=[{"field": "to", "message": N_("must not be before from")}]
        )
    report = await reports.people_reached(session, start, end)
    groups: dict[str, int] = {}
    for row in report.rows:
        key = f"{row.sex}|{row.age_group}"
        groups[key] = groups.get(key, 0) + row.people
    ordered = sorted(groups.items())
    return PeopleReachedPage(
        report=report,
        by_month=charts.bar_chart([(m.month, m.people) for m in report.months]),
        by_group=charts.bar_chart(ordered),
        groups=ordered,
    )


@dataclass(frozen=True)
class FiveWLine:
    row: FiveWRow
    #: The quality rules this row breaks (none for a row R4V's check passes).
    breaks: list[RuleBreak]


@dataclass(frozen=True)
class FiveWPage:
    report: FiveWReport
    lines: list[FiveWLine]
    broken_rows: int
    #: The programmes behind the rule breaks, by id: whoever fixes a break fixes it there.
    programmes: dict[uuid.UUID, Programme]
    by_sex_and_age: charts.BarChart
    by_population: charts.BarChart


FIVE_W_SEX_AND_AGE = (
    "women_under_18", "men_under_18", "women_above_18", "men_above_18", "other_under_18", "other_above_18",
)  # fmt: skip
FIVE_W_POPULATIONS = ("in_destination", "in_transit", "host_community", "pendular", "returnee")
"""The template's splits of New beneficiaries, as `FiveWRow` names them, in the template's order."""


async def five_w(session: AsyncSession, month: str, country: str | None) -> FiveWPage:
    """The 5W as `GET /v1/reports/5w` makes it, each row beside the rules it breaks, and the new people of
    all rows by sex and age and by population group (what the file splits New into)."""
    report = (await reports.five_w(session, month, country)).report
    breaks: dict[int, list[RuleBreak]] = {}
    for broken in report.rule_breaks:
        breaks.setdefault(broken.row, []).append(broken)

    def summed(columns: Sequence[str]) -> charts.BarChart:
        return charts.bar_chart([(column, sum(getattr(row, column) for row in report.rows)) for column in columns])

    return FiveWPage(
        report=report,
        lines=[FiveWLine(row, breaks.get(index, [])) for index, row in enumerate(report.rows)],
        broken_rows=len(breaks),
        programmes=await _programmes(session, {ident for b in report.rule_breaks for ident in b.programme_ids}),
        by_sex_and_age=summed(FIVE_W_SEX_AND_AGE),
        by_population=summed(FIVE_W_POPULATIONS),
    )


@dataclass(frozen=True)
class FiveWFile:
    content: str | bytes
    media_type: str
    filename: str


async def five_w_file(
    session: AsyncSession, month: str, country: str | None, file_format: str, *, hxl: bool
) -> FiveWFile:
    """The file `GET /v1/reports/5w?format=csv|xlsx` serves, made by the same functions, and refused as the
    API refuses it: a month any of whose rows R4V's check would turn away is a 409 naming the breaks."""
    five_w = await reports.five_w(session, month, country)
    report = five_w.report
    if not report.passes_quality_rules:
        raise Conflict(
            N_("This 5W breaks R4V's quality rules: R4V would refuse the file, so it is not served."),
            extra={
                "errors": [
                    {"field": f"rows[{b.row}].{b.columns[0]}", "message": f"{b.rule}: {b.problem}"}
                    for b in report.rule_breaks
                ]
            },
        )
    name = f"5w-{month}{'-' + country if country else ''}"
    if file_format == "csv":
        return FiveWFile(report_files.five_w_csv(five_w.cells, hxl=hxl), CSV_MEDIA_TYPE, f"{name}.csv")
    return FiveWFile(report_files.five_w_xlsx(five_w.cells, hxl=hxl), report_files.XLSX_MEDIA_TYPE, f"{name}.xlsx")


# Audit trail ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilters:
    actor_id: uuid.UUID | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    action: str | None = None
    occurred_from: datetime | None = None
    occurred_to: datetime | None = None


async def audit_events(
    session: AsyncSession, filters: AuditFilters, after: uuid.UUID | None
) -> tuple[Sequence[AuditEvent], uuid.UUID | None]:
    rows = await AuditRepository(session).search(
        actor_id=filters.actor_id,
        resource_type=filters.resource_type,
        resource_id=filters.resource_id,
        action=filters.action,
        occurred_from=filters.occurred_from,
        occurred_to=filters.occurred_to,
        after_id=after,
        limit=PAGE_SIZE,
    )
    return rows[:PAGE_SIZE], _next(rows, lambda e: e.id)


# Possible duplicates --------------------------------------------------------------------------------------------


async def adjudications(
    session: AsyncSession, status: str | None, after: uuid.UUID | None
) -> tuple[list[AdjudicationOut], uuid.UUID | None]:
    rows = await AdjudicationRepository(session).list(after_id=after, limit=PAGE_SIZE, status=status)
    return [AdjudicationOut.of(a) for a in rows[:PAGE_SIZE]], _next(rows, lambda a: a.id)


@dataclass(frozen=True)
class SideBySide:
    adjudication: AdjudicationOut
    #: The record under review first, then each internal match still on file, as the visitor may see them.
    people: list[BeneficiaryOut]
    decide: bool
    why_not: str | None


async def side_by_side(
    session: AsyncSession, principal: Principal, adjudication_id: uuid.UUID, route: str
) -> SideBySide:
    """The record and what it may duplicate, masked or in full by role (`present`, which records a view in
    full); the decision buttons for whoever may decide, never the person who entered the record."""
    adjudication = AdjudicationOut.of(await AdjudicationRepository(session).require(adjudication_id))
    ids = [adjudication.beneficiary_id] + [m.beneficiary_id for m in adjudication.matches if m.beneficiary_id]
    found = {b.id: b for b in await BeneficiaryRepository(session).many(list(dict.fromkeys(ids)))}
    records = [found[i] for i in dict.fromkeys(ids) if i in found]
    people = await present(session, principal, route, await beneficiaries.out_many(session, records))
    under_review = found.get(adjudication.beneficiary_id)
    decide, why_not = False, None
    if adjudication.status == "open" and principal.has_any(frozenset({Role.registrar, Role.admin})):
        if under_review is not None and (
            principal.id == under_review.registered_by or principal.id in under_review.corrected_by
        ):
            why_not = N_("You registered or corrected this record: someone else must decide.")
        else:
            decide = True
    return SideBySide(adjudication, people, decide, why_not)


async def decide_adjudication(
    session: AsyncSession, principal: Principal, adjudication_id: uuid.UUID, decision: str | None, note: str | None
) -> AdjudicationOut:
    body = _valid(DecisionIn, {"decision": decision, "note": note})
    return await beneficiaries.decide_adjudication(session, principal, adjudication_id, body)


# Imports --------------------------------------------------------------------------------------------------------


async def import_list(
    session: AsyncSession, after: uuid.UUID | None
) -> tuple[Sequence[BeneficiaryImport], uuid.UUID | None]:
    rows = await ImportRepository(session).list(before_id=after, limit=PAGE_SIZE, status=None)
    return rows[:PAGE_SIZE], _next(rows, lambda i: i.id)


async def start_import(
    session: AsyncSession, settings: Settings, principal: Principal, upload: UploadFile
) -> ImportAccepted:
    return await imports.start_import(session, settings, principal, upload)


@dataclass(frozen=True)
class ImportPage:
    imp: BeneficiaryImport
    rows: Sequence[ImportRow]
    next_row: int | None
    progress: charts.Stack


async def import_detail(session: AsyncSession, import_id: uuid.UUID, after_row: int | None) -> ImportPage:
    """Progress, counts per outcome and a page of the rows that failed, with their field errors."""
    repo = ImportRepository(session)
    imp = await repo.require(import_id)
    rows = await repo.rows(import_id, after=after_row, limit=PAGE_SIZE, outcome="invalid")
    total = imp.rows_total or imp.rows_done
    progress = charts.stack([("done", imp.rows_done)], total=max(total, imp.rows_done))
    return ImportPage(imp, rows[:PAGE_SIZE], _next(rows, lambda r: r.row_number), progress)


async def import_errors(session: AsyncSession, engine: AsyncEngine, import_id: uuid.UUID) -> AsyncIterator[bytes]:
    """A finished import's row errors as the API's CSV (row, column, what is wrong; never a value)."""
    imp = await ImportRepository(session).require(import_id)
    if imp.status not in FINISHED_IMPORTS:
        raise Conflict(N_("The import has not finished: its row errors are ready once it has."))
    return imports.errors_csv(engine, import_id)


# Ledger verify --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verified:
    filename: str
    report: VerificationReport | None
    unreadable: str | None


async def verify_upload(upload: UploadFile, *, allow_gaps: bool) -> Verified:
    """`cbi-service ledger verify` on an uploaded export: the file is copied to a private temporary file
    (the verifier reads by path, in constant memory), checked off the event loop, and deleted."""
    name = upload.filename or "export"
    with tempfile.TemporaryDirectory(prefix="cbi-verify-") as folder:
        path = Path(folder) / "export"
        await asyncio.to_thread(_save, upload, path)
        try:
            report = await asyncio.to_thread(verify_file, path, allow_gaps=allow_gaps)
        except UnreadableExport as exc:
            return Verified(name, None, str(exc))
    return Verified(name, report, None)


def _save(upload: UploadFile, path: Path) -> None:
    upload.file.seek(0)
    with path.open("wb") as out:
        shutil.copyfileobj(upload.file, out)
