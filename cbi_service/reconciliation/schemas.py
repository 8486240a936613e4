from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cbi_service.kit.money import Money
from cbi_service.reconciliation.models import BREAK_KINDS, LEDGER_BALANCES, Reconciliation, ReconciliationBreak

Status = Literal["running", "completed", "failed"]
BreakKind = Literal[BREAK_KINDS]  # type: ignore[valid-type]
LedgerBalance = Literal[LEDGER_BALANCES]  # type: ignore[valid-type]
Difference = Literal["amount", "currency", "provider_ref"]


class Counts(BaseModel):
    matched: int
    amount_mismatch: int
    missing_in_ledger: int
    missing_in_statement: int


class StatementSide(BaseModel):
    amount: Money
    date: date
    provider_ref: str | None


class LedgerSide(BaseModel):
    transaction_id: uuid.UUID
    amount: Money
    posted_at: datetime
    provider_ref: str | None


class ReconciliationItem(BaseModel):
    line: int | None = Field(
        description="Where the statement says it: a CSV's line (header = line 1), an MT940's line of the :61:, or"
        " the transaction's position in a camt.053 or pain.002 (1 = the first); null for missing_in_statement."
    )
    entitlement_id: str = Field(description="As the statement wrote it, or the ledger's for missing_in_statement.")
    statement: StatementSide | None
    ledger: LedgerSide | None
    differences: list[Difference] = Field(
        description="What the line and the ledger disagree on (every amount_mismatch names at least one); empty"
        " when either side is missing. A line's blank provider_ref is not compared."
    )


class Items(BaseModel):
    matched: list[ReconciliationItem]
    amount_mismatch: list[ReconciliationItem]
    missing_in_ledger: list[ReconciliationItem]
    missing_in_statement: list[ReconciliationItem]


class ReconciliationOut(BaseModel):
    id: uuid.UUID
    provider: str
    status: Status
    filename: str
    statement_sha256: str
    period_start: date
    period_end: date
    lines_total: int
    lines_done: int = Field(description="Statement lines reconciled so far (progress while running).")
    counts: Counts
    error: str | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, rec: Reconciliation) -> ReconciliationOut:
        return cls(
            id=rec.id,
            provider=rec.provider,
            status=rec.status,
            filename=rec.filename,
            statement_sha256=rec.statement_sha256,
            period_start=rec.period_start,
            period_end=rec.period_end,
            lines_total=rec.lines_total,
            lines_done=rec.lines_done,
            counts=Counts(
                matched=rec.matched,
                amount_mismatch=rec.amount_mismatch,
                missing_in_ledger=rec.missing_in_ledger,
                missing_in_statement=rec.missing_in_statement,
            ),
            error=rec.error,
            created_at=rec.created_at,
            finished_at=rec.finished_at,
        )


class ReconciliationReport(ReconciliationOut):
    items: Items = Field(description="Every finding by category; empty until the reconciliation completes.")


class LedgerMovement(BaseModel):
    """What would have to be posted, between the programme's balances, for the ledger to show the event."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    source: LedgerBalance = Field(alias="from")
    to: LedgerBalance
    amount: Money


class ReconciliationBreakOut(BaseModel):
    """A provider confirmation the ledger could not record; the provider believes this money moved."""

    id: uuid.UUID
    kind: BreakKind
    provider: str
    entitlement_id: uuid.UUID
    programme_id: uuid.UUID
    webhook_event_id: uuid.UUID = Field(description="The provider event, `refused` in the webhook inbox.")
    event_type: str
    provider_ref: str
    occurred_at: datetime = Field(description="When the provider says it happened.")
    entitlement_status: str = Field(description="The entitlement's status when the event was applied.")
    amount: Money = Field(description="What the provider says moved.")
    ledger_movement: LedgerMovement
    available: Money = Field(description="The programme's available balance when the event was applied.")
    detail: str
    created_at: datetime

    @classmethod
    def of(cls, found: ReconciliationBreak) -> ReconciliationBreakOut:
        amount = Money.of(found.amount_minor, found.currency)
        return cls(
            id=found.id,
            kind=found.kind,
            provider=found.provider,
            entitlement_id=found.entitlement_id,
            programme_id=found.programme_id,
            webhook_event_id=found.webhook_event_id,
            event_type=found.event_type,
            provider_ref=found.provider_ref,
            occurred_at=found.occurred_at,
            entitlement_status=found.entitlement_status,
            amount=amount,
            ledger_movement=LedgerMovement(source=found.move_from, to=found.move_to, amount=amount),
            available=Money.of(found.available_minor, found.currency),
            detail=found.detail,
            created_at=found.created_at,
        )
