from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from cbi_service.kit.ids import new_id
from cbi_service.kit.models import Base, CreatedAt, one_of

STATUSES = ("running", "completed", "failed")
CATEGORIES = ("matched", "amount_mismatch", "missing_in_ledger", "missing_in_statement")


class Reconciliation(CreatedAt, Base):
    """One statement reconciled against the ledger; counts and `lines_done` move as chunks commit."""

    __tablename__ = "reconciliations"
    __table_args__ = (
        CheckConstraint(one_of("status", STATUSES), name="status"),
        CheckConstraint("period_start <= period_end", name="period"),
        CheckConstraint("lines_done >= 0 AND lines_done <= lines_total", name="progress"),
        Index("ix_reconciliations_provider", "provider", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    provider: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(10), server_default="running")
    filename: Mapped[str] = mapped_column(String(255))
    statement_sha256: Mapped[str] = mapped_column(String(64))
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    lines_total: Mapped[int] = mapped_column(Integer)
    lines_done: Mapped[int] = mapped_column(Integer, server_default="0")
    matched: Mapped[int] = mapped_column(Integer, server_default="0")
    amount_mismatch: Mapped[int] = mapped_column(Integer, server_default="0")
    missing_in_ledger: Mapped[int] = mapped_column(Integer, server_default="0")
    missing_in_statement: Mapped[int] = mapped_column(Integer, server_default="0")
    error: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[uuid.UUID] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class StatementLine(Base):
    """A statement line as the provider wrote it (parsed), COPY-inserted at upload."""

    __tablename__ = "reconciliation_lines"
    __table_args__ = (Index("ix_reconciliation_lines_entitlement", "reconciliation_id", "entitlement_id", "line_no"),)

    #: Deferred: lines are COPY-inserted while the file is read, the reconciliation row written after.
    reconciliation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("reconciliations.id", ondelete="CASCADE", deferrable=True, initially="DEFERRED"), primary_key=True
    )
    #: The line's number in the file (the header is line 1).
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: `entitlement_id` as written; `entitlement_id` is its UUID, or NULL when it is not one of ours.
    entitlement_ref: Mapped[str] = mapped_column(Text)
    entitlement_id: Mapped[uuid.UUID | None] = mapped_column()
    provider_ref: Mapped[str | None] = mapped_column(Text)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    value_date: Mapped[date] = mapped_column(Date)


class ReconciliationItem(Base):
    """One finding: a statement line (with its ledger counterpart, if any) or a ledger disbursement alone."""

    __tablename__ = "reconciliation_items"
    __table_args__ = (
        CheckConstraint(one_of("category", CATEGORIES), name="category"),
        CheckConstraint("(category = 'missing_in_statement') = (line_no IS NULL)", name="line_presence"),
        Index("ix_reconciliation_items_category", "reconciliation_id", "category", "id"),
        # One finding per statement line and per unmatched disbursement: a re-run chunk adds nothing twice.
        Index(
            "uq_reconciliation_items_line",
            "reconciliation_id",
            "line_no",
            unique=True,
            postgresql_where=text("line_no IS NOT NULL"),
        ),
        Index(
            "uq_reconciliation_items_unmatched",
            "reconciliation_id",
            "entitlement_id",
            unique=True,
            postgresql_where=text("category = 'missing_in_statement'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    reconciliation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("reconciliations.id", ondelete="CASCADE"))
    category: Mapped[str] = mapped_column(String(24))
    line_no: Mapped[int | None] = mapped_column(Integer)
    entitlement_id: Mapped[uuid.UUID | None] = mapped_column()
    ledger_transaction_id: Mapped[uuid.UUID | None] = mapped_column()
    ledger_amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    ledger_currency: Mapped[str | None] = mapped_column(String(3))
    ledger_posted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ledger_provider_ref: Mapped[str | None] = mapped_column(Text)


LOAD_BREAK_KINDS = ("issued_after_failure", "issued_after_cancel")
BREAK_KINDS = (*LOAD_BREAK_KINDS, "redeemed_after_expiry", "redeemed_after_failure")
"""Provider confirmations the ledger could not record as they came: `issued_after_failure` (a late
`entitlement.issued` once the failed entitlement's budget was taken by other payments),
`issued_after_cancel` (a load confirmed after the entitlement was cancelled and its budget released),
`redeemed_after_expiry` (a redemption stamped before the voucher's expiry, which had already returned its
value to the budget), `redeemed_after_failure` (a redemption of a voucher whose entitlement failed here,
once its budget was taken by other payments)."""
LEDGER_BALANCES = ("available", "committed", "disbursed", "redeemed")


class ReconciliationBreak(CreatedAt, Base):
    """A provider says money moved and the ledger does not show it: kept for finance to resolve.

    One per provider event, and one per entitlement for a load (the event is `refused` in the inbox).
    `move_from` → `move_to` of `amount_minor` is what would have to be posted for the ledger to reflect the
    provider's account; `available_minor` is the programme's available balance when the event was applied.
    """

    __tablename__ = "reconciliation_breaks"
    __table_args__ = (
        CheckConstraint(one_of("kind", BREAK_KINDS), name="kind"),
        CheckConstraint(one_of("move_from", LEDGER_BALANCES), name="move_from"),
        CheckConstraint(one_of("move_to", LEDGER_BALANCES), name="move_to"),
        CheckConstraint("amount_minor > 0", name="amount"),
        Index("uq_reconciliation_breaks_webhook_event", "webhook_event_id", unique=True),
        # A load is one fact whatever number of events report it; redemptions are each their own.
        Index(
            "uq_reconciliation_breaks_issue",
            "entitlement_id",
            "kind",
            unique=True,
            postgresql_where=text(one_of("kind", LOAD_BREAK_KINDS)),
        ),
        Index("ix_reconciliation_breaks_provider", "provider", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(24))
    provider: Mapped[str] = mapped_column(String(100))
    webhook_event_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_events.id"))
    event_type: Mapped[str] = mapped_column(String(40))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    entitlement_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("entitlements.id"))
    programme_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programmes.id"))
    provider_ref: Mapped[str] = mapped_column(String(128))
    entitlement_status: Mapped[str] = mapped_column(String(16))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    move_from: Mapped[str] = mapped_column(String(16))
    move_to: Mapped[str] = mapped_column(String(16))
    available_minor: Mapped[int] = mapped_column(BigInteger)
    detail: Mapped[str] = mapped_column(String(500))
