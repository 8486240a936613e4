"""Merchant settlements (§14): what the agency pays a merchant for its redeemed paper vouchers, through the
same maker-checker as batches; each redemption is paid by at most one live settlement.

Revision ID: 0019_merchant_settlements
Revises: 0018_voucher_redemptions
Create Date: 2026-12-12 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019_merchant_settlements"
down_revision: str | Sequence[str] | None = "0018_voucher_redemptions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "merchant_settlements",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("merchant_id", sa.Uuid(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="draft", nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("redemption_count", sa.Integer(), nullable=False),
        sa.Column("approvals_needed", sa.Integer(), nullable=True),
        sa.Column("bank_reference", sa.String(length=35), nullable=True),
        sa.Column("created_by", sa.Uuid(), nullable=False),
        sa.Column("submitted_by", sa.Uuid(), nullable=True),
        sa.Column("released_by", sa.Uuid(), nullable=True),
        sa.Column("paid_by", sa.Uuid(), nullable=True),
        sa.Column("cancelled_by", sa.Uuid(), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "(status = 'paid') = (bank_reference IS NOT NULL)", name=op.f("ck_merchant_settlements_paid_reference")
        ),
        sa.CheckConstraint(
            "status IN ('draft', 'pending_approval', 'approved', 'released', 'paid', 'rejected', 'cancelled')",
            name=op.f("ck_merchant_settlements_status"),
        ),
        sa.CheckConstraint(
            "approvals_needed IS NULL OR approvals_needed >= 1", name=op.f("ck_merchant_settlements_approvals_needed")
        ),
        sa.CheckConstraint("total_minor >= 0 AND redemption_count >= 0", name=op.f("ck_merchant_settlements_totals")),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_merchant_settlements_merchant_id_merchants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchant_settlements")),
    )
    op.create_index("ix_merchant_settlements_merchant", "merchant_settlements", ["merchant_id", "id"], unique=False)
    op.create_index("ix_merchant_settlements_status", "merchant_settlements", ["status", "id"], unique=False)
    op.create_table(
        "merchant_settlement_approvals",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("settlement_id", sa.Uuid(), nullable=False),
        sa.Column("approver_id", sa.Uuid(), nullable=False),
        sa.Column("approver_name", sa.String(length=200), nullable=False),
        sa.Column("decision", sa.String(length=10), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("decision IN ('approve', 'reject')", name=op.f("ck_merchant_settlement_approvals_decision")),
        sa.ForeignKeyConstraint(
            ["settlement_id"],
            ["merchant_settlements.id"],
            name=op.f("fk_merchant_settlement_approvals_settlement_id_merchant_settlements"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchant_settlement_approvals")),
    )
    op.create_index(
        "uq_merchant_settlement_approvals_approver",
        "merchant_settlement_approvals",
        ["settlement_id", "approver_id"],
        unique=True,
    )
    op.create_table(
        "merchant_settlement_items",
        sa.Column("settlement_id", sa.Uuid(), nullable=False),
        sa.Column("redemption_id", sa.Uuid(), nullable=False),
        sa.Column("programme_id", sa.Uuid(), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("live", sa.Boolean(), server_default="true", nullable=False),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_merchant_settlement_items_amount_positive")),
        sa.ForeignKeyConstraint(
            ["programme_id"], ["programmes.id"], name=op.f("fk_merchant_settlement_items_programme_id_programmes")
        ),
        sa.ForeignKeyConstraint(
            ["redemption_id"],
            ["voucher_redemptions.id"],
            name=op.f("fk_merchant_settlement_items_redemption_id_voucher_redemptions"),
        ),
        sa.ForeignKeyConstraint(
            ["settlement_id"],
            ["merchant_settlements.id"],
            name=op.f("fk_merchant_settlement_items_settlement_id_merchant_settlements"),
        ),
        sa.PrimaryKeyConstraint("settlement_id", "redemption_id", name=op.f("pk_merchant_settlement_items")),
    )
    op.create_index(
        "ix_merchant_settlement_items_programme",
        "merchant_settlement_items",
        ["settlement_id", "programme_id"],
        unique=False,
    )
    op.create_index(
        "uq_settlement_items_live_redemption",
        "merchant_settlement_items",
        ["redemption_id"],
        unique=True,
        postgresql_where="live",
    )


def downgrade() -> None:
    op.drop_index(
        "uq_settlement_items_live_redemption", table_name="merchant_settlement_items", postgresql_where="live"
    )
    op.drop_index("ix_merchant_settlement_items_programme", table_name="merchant_settlement_items")
    op.drop_table("merchant_settlement_items")
    op.drop_index("uq_merchant_settlement_approvals_approver", table_name="merchant_settlement_approvals")
    op.drop_table("merchant_settlement_approvals")
    op.drop_index("ix_merchant_settlements_status", table_name="merchant_settlements")
    op.drop_index("ix_merchant_settlements_merchant", table_name="merchant_settlements")
    op.drop_table("merchant_settlements")
