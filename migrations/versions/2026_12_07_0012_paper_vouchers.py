"""Paper vouchers: the `paper_voucher` delivery mechanism, and the signed token the agency issues with each.

A paper-voucher programme must say how long its vouchers are valid (their token carries the expiry). An
entitlement holding a token holds its code and expiry too, and no two such codes are the same.

Revision ID: 0012_paper_vouchers
Revises: 0011_redeemed_after_failure
Create Date: 2026-12-07 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_paper_vouchers"
down_revision: str | Sequence[str] | None = "0011_redeemed_after_failure"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _mechanisms(values: str) -> None:
    op.drop_constraint(op.f("ck_programmes_delivery_mechanism"), "programmes", type_="check")
    op.create_check_constraint(
        op.f("ck_programmes_delivery_mechanism"), "programmes", f"delivery_mechanism IN ({values})"
    )


def upgrade() -> None:
    _mechanisms("'prepaid_card', 'voucher', 'paper_voucher'")
    op.create_check_constraint(
        op.f("ck_programmes_paper_voucher_validity"),
        "programmes",
        "delivery_mechanism <> 'paper_voucher' OR voucher_validity_days IS NOT NULL",
    )
    op.add_column("entitlements", sa.Column("voucher_token", sa.Text(), nullable=True))
    op.create_check_constraint(
        op.f("ck_entitlements_signed_voucher"),
        "entitlements",
        "voucher_token IS NULL OR (voucher_code IS NOT NULL AND expires_at IS NOT NULL)",
    )
    op.create_index(
        "uq_entitlements_voucher_code",
        "entitlements",
        ["voucher_code"],
        unique=True,
        postgresql_where=sa.text("voucher_token IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_entitlements_voucher_code", table_name="entitlements")
    op.drop_constraint(op.f("ck_entitlements_signed_voucher"), "entitlements", type_="check")
    op.drop_column("entitlements", "voucher_token")
    op.drop_constraint(op.f("ck_programmes_paper_voucher_validity"), "programmes", type_="check")
    _mechanisms("'prepaid_card', 'voucher'")
