"""Merchants (§14): the shops that accept paper vouchers, the programmes each serves, and API keys bound to
one merchant (the `merchant` role, held alone).

Revision ID: 0017_merchants
Revises: 0016_personal_data_sealed
Create Date: 2026-12-11 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017_merchants"
down_revision: str | Sequence[str] | None = "0016_personal_data_sealed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STAFF = "'admin','registrar','programme_officer','approver','finance','auditor'"
PAYOUT_ACCOUNT = (
    "(payout_iban IS NULL) <> (payout_account_number IS NULL)"
    " AND (payout_iban IS NULL OR payout_bic IS NOT NULL)"
    " AND (payout_account_number IS NULL OR payout_bank_code IS NOT NULL)"
)
MERCHANT_KEY = (
    "(merchant_id IS NOT NULL) = ('merchant' = ANY (roles)) AND (merchant_id IS NULL OR cardinality(roles) = 1)"
)


def _known_roles(roles: str) -> None:
    op.drop_constraint(op.f("ck_api_keys_known_roles"), "api_keys", type_="check")
    op.create_check_constraint(op.f("ck_api_keys_known_roles"), "api_keys", f"roles <@ ARRAY[{roles}]::text[]")


def upgrade() -> None:
    op.create_table(
        "merchants",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("payout_account_name", sa.String(length=140), nullable=False),
        sa.Column("payout_iban", sa.String(length=34), nullable=True),
        sa.Column("payout_bic", sa.String(length=11), nullable=True),
        sa.Column("payout_account_number", sa.String(length=34), nullable=True),
        sa.Column("payout_bank_code", sa.String(length=35), nullable=True),
        sa.Column("created_by", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("country ~ '^[A-Z]{2}$'", name=op.f("ck_merchants_country")),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name=op.f("ck_merchants_currency")),
        sa.CheckConstraint(PAYOUT_ACCOUNT, name=op.f("ck_merchants_payout_account")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merchants")),
    )
    op.create_table(
        "merchant_programmes",
        sa.Column("merchant_id", sa.Uuid(), nullable=False),
        sa.Column("programme_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_id"], ["merchants.id"], name=op.f("fk_merchant_programmes_merchant_id_merchants")
        ),
        sa.ForeignKeyConstraint(
            ["programme_id"], ["programmes.id"], name=op.f("fk_merchant_programmes_programme_id_programmes")
        ),
        sa.PrimaryKeyConstraint("merchant_id", "programme_id", name=op.f("pk_merchant_programmes")),
    )
    op.create_index(
        "ix_merchant_programmes_programme", "merchant_programmes", ["programme_id", "merchant_id"], unique=False
    )
    op.add_column("api_keys", sa.Column("merchant_id", sa.Uuid(), nullable=True))
    op.create_foreign_key(op.f("fk_api_keys_merchant_id_merchants"), "api_keys", "merchants", ["merchant_id"], ["id"])
    _known_roles(f"{STAFF},'merchant'")
    op.create_check_constraint(op.f("ck_api_keys_merchant_key"), "api_keys", MERCHANT_KEY)


def downgrade() -> None:
    op.execute("DELETE FROM api_keys WHERE merchant_id IS NOT NULL")
    op.drop_constraint(op.f("ck_api_keys_merchant_key"), "api_keys", type_="check")
    _known_roles(STAFF)
    op.drop_constraint(op.f("fk_api_keys_merchant_id_merchants"), "api_keys", type_="foreignkey")
    op.drop_column("api_keys", "merchant_id")
    op.drop_index("ix_merchant_programmes_programme", table_name="merchant_programmes")
    op.drop_table("merchant_programmes")
    op.drop_table("merchants")
