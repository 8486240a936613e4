"""Reconciliation of a provider's statement against the ledger.

The statement is a CSV, an ISO 20022 camt.053 or pain.002, or a SWIFT MT940, told apart by its content
(`formats`); each is read into the same lines, reconciled below by the same code. The upload is read as it
streams in (the multipart body is already spooled to disk by the server) and its lines are COPY-inserted in
batches, so a 100k-line statement never sits in memory; a statement with an unreadable line is refused
whole (422 naming the lines), because reconciling part of a statement would report the rest as missing.
A background job then matches the lines in chunks (`lines_done` is the progress) and finally lists the
period's disbursements that no line names.

Categories, for provider P (see `repository` for what "in the ledger" means):
- matched: the line's entitlement is in the ledger for P with the same amount and currency;
- amount_mismatch: it is, with another amount, currency or provider_ref (a line's blank provider_ref is
  not compared); the item's `differences` names what differs;
- missing_in_ledger: it is not (unknown id, another provider's entitlement, never issued), or an earlier
  line of the statement already claimed it (a duplicate charge);
- missing_in_statement: in the ledger for P, disbursed within the period, and named by no line.
The period is the statement's first to last `date` unless `period_start`/`period_end` are given.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import IO, Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from cbi_service.audit.service import record_audit
from cbi_service.auth.roles import Principal
from cbi_service.jobs.service import enqueue
from cbi_service.kit.cells import SafeWriter
from cbi_service.kit.errors import UnprocessableEntity
from cbi_service.kit.ids import new_id
from cbi_service.kit.money import Money
from cbi_service.kit.settings import Settings
from cbi_service.kit.timeutil import day_bounds
from cbi_service.reconciliation.formats import read_statement
from cbi_service.reconciliation.models import Reconciliation
from cbi_service.reconciliation.repository import ReconciliationRepository, stream_items
from cbi_service.reconciliation.schemas import (
    Difference,
    LedgerSide,
    ReconciliationItem,
    ReconciliationOut,
    StatementSide,
)
from cbi_service.reconciliation.statement import Line, StatementError, Summary

JOB_KIND = "reconciliation.run"
JOB_ATTEMPTS = 5
COPY_BATCH = 5_000
CHUNK_LINES = 10_000


def _next_batch(batches: Iterator[list[Line]]) -> list[Line] | None:
    return next(batches, None)


def _statement_problem(error: StatementError, problems: list[dict[str, str]]) -> UnprocessableEntity:
    """The statement's errors after the request's other `problems`."""
    return UnprocessableEntity(
        "The statement cannot be reconciled.",
        errors=[
            *problems,
            *(
                {
                    "field": f"file.{column}" if column else "file",
                    "message": f"line {line}: {message}" if line else message,
                }
                for line, column, message in error.errors
            ),
        ],
    )


async def create_reconciliation(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    *,
    provider: str,
    statement: IO[bytes],
    filename: str,
    statement_sha256: str,
    period_start: date | None,
    period_end: date | None,
) -> ReconciliationOut:
    # Every problem of the request is reported at once: the provider, the statement's lines, the period.
    problems: list[dict[str, str]] = []
    if provider not in settings.providers:
        problems.append({"field": "provider", "message": "not a configured provider"})
    repo = ReconciliationRepository(session)
    reconciliation_id = new_id()
    summary = Summary()
    batches = read_statement(statement, summary, COPY_BATCH, settings.text_limits)
    loop = asyncio.get_running_loop()
    # One thread reads the whole file: lxml's streaming parser must stay on the thread it started on.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="statement") as reader:
        try:
            while (batch := await loop.run_in_executor(reader, _next_batch, batches)) is not None:
                await repo.copy_lines(reconciliation_id, batch)
        except StatementError as exc:
            raise _statement_problem(exc, problems) from None
        finally:
            await loop.run_in_executor(reader, batches.close)
    if summary.errors:
        raise _statement_problem(StatementError(summary.errors), problems)
    if summary.first_date is None or summary.last_date is None:
        empty = f"none of its {summary.skipped} transactions moved money" if summary.skipped else "empty"
        raise UnprocessableEntity(
            "The statement has no lines.", errors=[*problems, {"field": "file", "message": empty}]
        )
    start = period_start or summary.first_date
    end = period_end or summary.last_date
    if start > end:
        problems.append({"field": "period_end", "message": "must not be before period_start"})
    elif end >= date.max:
        problems.append({"field": "period_end", "message": "out of range"})
    if problems:
        raise UnprocessableEntity("The reconciliation request is not valid.", errors=problems)
    reconciliation = await repo.add(
        Reconciliation(
            id=reconciliation_id,
            provider=provider,
            filename=filename[:255],
            statement_sha256=statement_sha256,
            period_start=start,
            period_end=end,
            lines_total=summary.lines,
            created_by=principal.id,
        )
    )
    await enqueue(
        session,
        JOB_KIND,
        {"reconciliation_id": str(reconciliation_id)},
        dedupe_key=f"reconciliation:{reconciliation_id}",
        max_attempts=JOB_ATTEMPTS,
    )
    out = ReconciliationOut.of(reconciliation)
    await record_audit(
        session,
        principal,
        "reconciliation.created",
        "reconciliation",
        reconciliation_id,
        None,
        {
            **out.model_dump(mode="json", include={"provider", "filename", "statement_sha256", "lines_total"}),
            "statement_format": summary.format,
        },
    )
    return out


# -------------------------------------------------------------------------------------------- the job's steps


def _count(reconciliation: Reconciliation, found: Counter[str]) -> None:
    for category, number in found.items():
        setattr(reconciliation, category, getattr(reconciliation, category) + number)


async def reconcile_next_chunk(session: AsyncSession, reconciliation_id: uuid.UUID) -> bool:
    """Reconcile the next chunk of lines, or close the period; False once there is nothing left to do.

    Runs in the caller's transaction with the reconciliation row locked: the findings, the counts and
    `lines_done` commit together."""
    repo = ReconciliationRepository(session)
    reconciliation = await repo.get(reconciliation_id, for_update=True)
    if reconciliation is None or reconciliation.status != "running":
        return False
    if reconciliation.lines_done < reconciliation.lines_total:
        found = await repo.match_chunk(reconciliation, CHUNK_LINES)
        if not found:
            raise RuntimeError(f"{reconciliation.lines_done} of {reconciliation.lines_total} lines, none left")
        _count(reconciliation, found)
        reconciliation.lines_done += sum(found.values())
        return True
    start, end = day_bounds(reconciliation.period_start, reconciliation.period_end)
    reconciliation.missing_in_statement += await repo.insert_unmatched(reconciliation, start, end)
    reconciliation.status = "completed"
    await repo.stamp_finished(reconciliation)
    await record_audit(
        session,
        None,
        "reconciliation.completed",
        "reconciliation",
        reconciliation.id,
        {"status": "running"},
        {
            "status": "completed",
            "matched": reconciliation.matched,
            "amount_mismatch": reconciliation.amount_mismatch,
            "missing_in_ledger": reconciliation.missing_in_ledger,
            "missing_in_statement": reconciliation.missing_in_statement,
        },
    )
    return False


async def fail_reconciliation(session: AsyncSession, reconciliation_id: uuid.UUID, error: str) -> None:
    """A job out of attempts: the reconciliation stops as failed, saying why."""
    repo = ReconciliationRepository(session)
    reconciliation = await repo.get(reconciliation_id, for_update=True)
    if reconciliation is None or reconciliation.status != "running":
        return
    reconciliation.status = "failed"
    reconciliation.error = error
    await repo.stamp_finished(reconciliation)
    await record_audit(
        session, None, "reconciliation.failed", "reconciliation", reconciliation.id, {"status": "running"}, None
    )


# -------------------------------------------------------------------------------------------- reports


def _item(row: Any) -> ReconciliationItem:
    statement = None
    if row.line_no is not None:
        statement = StatementSide(
            amount=Money.of(row.amount_minor, row.currency), date=row.value_date, provider_ref=row.provider_ref
        )
    ledger = None
    if row.ledger_transaction_id is not None:
        ledger = LedgerSide(
            transaction_id=row.ledger_transaction_id,
            amount=Money.of(row.ledger_amount_minor, row.ledger_currency),
            posted_at=row.ledger_posted_at,
            provider_ref=row.ledger_provider_ref,
        )
    return ReconciliationItem(
        line=row.line_no,
        entitlement_id=row.entitlement_ref,
        statement=statement,
        ledger=ledger,
        differences=_differences(row) if statement and ledger else [],
    )


def _differences(row: Any) -> list[Difference]:
    """What a statement line and its ledger disbursement disagree on, by the rule the matching applies."""
    found: list[Difference] = []
    if row.amount_minor != row.ledger_amount_minor:
        found.append("amount")
    if row.currency != row.ledger_currency:
        found.append("currency")
    if row.provider_ref is not None and row.provider_ref != row.ledger_provider_ref:
        found.append("provider_ref")
    return found


async def report_json(engine: AsyncEngine, head: ReconciliationOut) -> AsyncIterator[bytes]:
    """The report as one JSON document, its items streamed category by category (constant memory)."""
    document = head.model_dump_json()
    yield (document[:-1] + ',"items":{').encode()
    opened = 0
    first_item = True
    items = stream_items(engine, head.id)
    async with contextlib.aclosing(items):
        async for category, rows in items:
            if not rows:
                yield f"{'],' if opened else ''}{json.dumps(category)}:[".encode()
                opened += 1
                first_item = True
                continue
            parts = [_item(row).model_dump_json() for row in rows]
            yield (("" if first_item else ",") + ",".join(parts)).encode()
            first_item = False
    yield b"]}}"


CSV_COLUMNS = (
    "category",
    "line",
    "entitlement_id",
    "statement_provider_ref",
    "statement_amount",
    "statement_currency",
    "statement_date",
    "ledger_transaction_id",
    "ledger_amount",
    "ledger_currency",
    "ledger_posted_at",
    "ledger_provider_ref",
)


def _csv_rows(category: str, rows: Sequence[Any]) -> bytes:
    buffer = io.StringIO()
    writer = SafeWriter(buffer)
    for row in rows:
        item = _item(row)
        statement, ledger = item.statement, item.ledger
        writer.writerow(
            (
                category,
                item.line or "",
                item.entitlement_id,
                statement.provider_ref or "" if statement else "",
                statement.amount.amount if statement else "",
                statement.amount.currency if statement else "",
                statement.date.isoformat() if statement else "",
                ledger.transaction_id if ledger else "",
                ledger.amount.amount if ledger else "",
                ledger.amount.currency if ledger else "",
                ledger.posted_at.isoformat() if ledger else "",
                ledger.provider_ref or "" if ledger else "",
            )
        )
    return buffer.getvalue().encode()


async def report_csv(engine: AsyncEngine, reconciliation_id: uuid.UUID) -> AsyncIterator[bytes]:
    """Every item as one CSV line, categories in the order of `counts`."""
    header = io.StringIO()
    SafeWriter(header).writerow(CSV_COLUMNS)
    yield header.getvalue().encode()
    items = stream_items(engine, reconciliation_id)
    async with contextlib.aclosing(items):
        async for category, rows in items:
            if rows:
                yield _csv_rows(category, rows)
