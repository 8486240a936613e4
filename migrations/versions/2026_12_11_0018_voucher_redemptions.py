"""Voucher redemptions (§14): paper vouchers redeemed at merchants online, and the scans their devices sync
from offline, one row per (merchant, device, local id).

Revision ID: 0018_voucher_redemptions
Revises: 0017_merchants
Create Date: 2026-12-11 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018_voucher_redemptions"
down_revision: str | Sequence[str] | None = "0017_merchants"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "voucher_redemptions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("merchant_id", sa.Uuid(), nullable=False),
        sa.Column("voucher_id", sa.Uuid(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("device_id", sa.String(length=100), nullable=True),
        sa.Column("local_id", sa.String(length=100), nullable=True),
        sa.Column("scanned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('accepted', 'conflict', 'rejected')", name=op.f("ck_voucher_redemptions_status")
        ),
        sa.CheckConstraint("channel IN ('online', 'offline')", name=op.f("ck_voucher_redemptions_channel")),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_voucher_redemptions_amount_positive")),
        sa.CheckConstraint(
            "(channel = 'offline') = (device_id IS NOT NULL AND local_id IS NOT NULL)",
            name=op.f("ck_voucher_redemptions_offline_item"),
        ),
        sa.CheckConstraint(
            "channel = 'offline' OR status = 'accepted'", name=op.f("ck_voucher_redemptions_online_accepted")
        ),
        sa.CheckConstraint(
            "status = 'rejected' OR voucher_id IS NOT NULL", name=op.f("ck_voucher_redemptions_voucher_known")
        ),
        sa.CheckConstraint("(status = 'accepted') = (reason IS NULL)", name=op.f("ck_voucher_redemptions_reason")),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_voucher_redemptions_merchant_id_merchants")
        ),
        sa.ForeignKeyConstraint(
            ["voucher_id"], ["entitlements.id"], name=op.f("fk_voucher_redemptions_voucher_id_entitlements")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_voucher_redemptions")),
    )
    op.create_index(
        "uq_voucher_redemptions_device_item",
        "voucher_redemptions",
        ["merchant_id", "device_id", "local_id"],
        unique=True,
    )
    op.create_index("ix_voucher_redemptions_status", "voucher_redemptions", ["status", "id"], unique=False)
    op.create_index("ix_voucher_redemptions_merchant", "voucher_redemptions", ["merchant_id", "id"], unique=False)
    op.create_index("ix_voucher_redemptions_voucher", "voucher_redemptions", ["voucher_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_voucher_redemptions_voucher", table_name="voucher_redemptions")
    op.drop_index("ix_voucher_redemptions_merchant", table_name="voucher_redemptions")
    op.drop_index("ix_voucher_redemptions_status", table_name="voucher_redemptions")
    op.drop_index("uq_voucher_redemptions_device_item", table_name="voucher_redemptions")
    op.drop_table("voucher_redemptions")
