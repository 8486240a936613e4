"""Auditors: reconciliations of provider statements, with the statement's lines and the findings.

The lines' foreign key is deferred: an upload COPYs its lines while reading the file, and the
reconciliation row, whose period and line count are known only at the end, is written last.

Revision ID: 0006_audit_reports
Revises: 0005_webhooks
Create Date: 2026-11-22 10:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_audit_reports"
down_revision: str | Sequence[str] | None = "0005_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reconciliations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=10), server_default="running", nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("statement_sha256", sa.String(length=64), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("lines_total", sa.Integer(), nullable=False),
        sa.Column("lines_done", sa.Integer(), server_default="0", nullable=False),
        sa.Column("matched", sa.Integer(), server_default="0", nullable=False),
        sa.Column("amount_mismatch", sa.Integer(), server_default="0", nullable=False),
        sa.Column("missing_in_ledger", sa.Integer(), server_default="0", nullable=False),
        sa.Column("missing_in_statement", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("created_by", sa.Uuid(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("status IN ('running', 'completed', 'failed')", name=op.f("ck_reconciliations_status")),
        sa.CheckConstraint("period_start <= period_end", name=op.f("ck_reconciliations_period")),
        sa.CheckConstraint("lines_done >= 0 AND lines_done <= lines_total", name=op.f("ck_reconciliations_progress")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliations")),
    )
    op.create_index("ix_reconciliations_provider", "reconciliations", ["provider", "id"])
    op.create_table(
        "reconciliation_lines",
        sa.Column("reconciliation_id", sa.Uuid(), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("entitlement_ref", sa.Text(), nullable=False),
        sa.Column("entitlement_id", sa.Uuid(), nullable=True),
        sa.Column("provider_ref", sa.Text(), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("value_date", sa.Date(), nullable=False),
        sa.ForeignKeyConstraint(
            ["reconciliation_id"],
            ["reconciliations.id"],
            name=op.f("fk_reconciliation_lines_reconciliation_id_reconciliations"),
            ondelete="CASCADE",
            deferrable=True,
            initially="DEFERRED",
        ),
        sa.PrimaryKeyConstraint("reconciliation_id", "line_no", name=op.f("pk_reconciliation_lines")),
    )
    op.create_index(
        "ix_reconciliation_lines_entitlement",
        "reconciliation_lines",
        ["reconciliation_id", "entitlement_id", "line_no"],
    )
    op.create_table(
        "reconciliation_items",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("reconciliation_id", sa.Uuid(), nullable=False),
        sa.Column("category", sa.String(length=24), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=True),
        sa.Column("entitlement_id", sa.Uuid(), nullable=True),
        sa.Column("ledger_transaction_id", sa.Uuid(), nullable=True),
        sa.Column("ledger_amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("ledger_currency", sa.String(length=3), nullable=True),
        sa.Column("ledger_posted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ledger_provider_ref", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "category IN ('matched', 'amount_mismatch', 'missing_in_ledger', 'missing_in_statement')",
            name=op.f("ck_reconciliation_items_category"),
        ),
        sa.CheckConstraint(
            "(category = 'missing_in_statement') = (line_no IS NULL)",
            name=op.f("ck_reconciliation_items_line_presence"),
        ),
        sa.ForeignKeyConstraint(
            ["reconciliation_id"],
            ["reconciliations.id"],
            name=op.f("fk_reconciliation_items_reconciliation_id_reconciliations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_items")),
    )
    op.create_index("ix_reconciliation_items_category", "reconciliation_items", ["reconciliation_id", "category", "id"])
    op.create_index(
        "uq_reconciliation_items_line",
        "reconciliation_items",
        ["reconciliation_id", "line_no"],
        unique=True,
        postgresql_where=sa.text("line_no IS NOT NULL"),
    )
    op.create_index(
        "uq_reconciliation_items_unmatched",
        "reconciliation_items",
        ["reconciliation_id", "entitlement_id"],
        unique=True,
        postgresql_where=sa.text("category = 'missing_in_statement'"),
    )


def downgrade() -> None:
    op.drop_table("reconciliation_items")
    op.drop_table("reconciliation_lines")
    op.drop_table("reconciliations")
