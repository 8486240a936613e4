"""Reconciliation breaks: provider confirmations the ledger could not record, kept for finance.

Revision ID: 0010_reconciliation_breaks
Revises: 0009_ledger_accounts_fillfactor
Create Date: 2026-12-06 21:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_reconciliation_breaks"
down_revision: str | Sequence[str] | None = "0009_ledger_accounts_fillfactor"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BALANCES = "('available', 'committed', 'disbursed', 'redeemed')"


def upgrade() -> None:
    op.create_table(
        "reconciliation_breaks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("webhook_event_id", sa.Uuid(), nullable=False),
        sa.Column("event_type", sa.String(length=40), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entitlement_id", sa.Uuid(), nullable=False),
        sa.Column("programme_id", sa.Uuid(), nullable=False),
        sa.Column("provider_ref", sa.String(length=128), nullable=False),
        sa.Column("entitlement_status", sa.String(length=16), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("move_from", sa.String(length=16), nullable=False),
        sa.Column("move_to", sa.String(length=16), nullable=False),
        sa.Column("available_minor", sa.BigInteger(), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "kind IN ('issued_after_failure', 'issued_after_cancel', 'redeemed_after_expiry')",
            name=op.f("ck_reconciliation_breaks_kind"),
        ),
        sa.CheckConstraint(f"move_from IN {_BALANCES}", name=op.f("ck_reconciliation_breaks_move_from")),
        sa.CheckConstraint(f"move_to IN {_BALANCES}", name=op.f("ck_reconciliation_breaks_move_to")),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_reconciliation_breaks_amount")),
        sa.ForeignKeyConstraint(
            ["webhook_event_id"],
            ["webhook_events.id"],
            name=op.f("fk_reconciliation_breaks_webhook_event_id_webhook_events"),
        ),
        sa.ForeignKeyConstraint(
            ["entitlement_id"], ["entitlements.id"], name=op.f("fk_reconciliation_breaks_entitlement_id_entitlements")
        ),
        sa.ForeignKeyConstraint(
            ["programme_id"], ["programmes.id"], name=op.f("fk_reconciliation_breaks_programme_id_programmes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_breaks")),
    )
    op.create_index(
        "uq_reconciliation_breaks_webhook_event", "reconciliation_breaks", ["webhook_event_id"], unique=True
    )
    op.create_index(
        "uq_reconciliation_breaks_issue",
        "reconciliation_breaks",
        ["entitlement_id", "kind"],
        unique=True,
        postgresql_where=sa.text("kind <> 'redeemed_after_expiry'"),
    )
    op.create_index("ix_reconciliation_breaks_provider", "reconciliation_breaks", ["provider", "id"])


def downgrade() -> None:
    op.drop_table("reconciliation_breaks")
