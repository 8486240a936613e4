"""A released merchant settlement whose payment file the bank refused (§14) is marked `refused`, with the
bank's reason: its redemptions are unsettled again, to be paid by a new settlement.

Revision ID: 0023_settlement_refused
Revises: 0022_registry_recheck_backoff
Create Date: 2026-12-15 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0023_settlement_refused"
down_revision: str | Sequence[str] | None = "0022_registry_recheck_backoff"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BEFORE = "'draft', 'pending_approval', 'approved', 'released', 'paid', 'rejected', 'cancelled'"


def upgrade() -> None:
    op.add_column("merchant_settlements", sa.Column("refusal_reason", sa.String(length=140), nullable=True))
    op.add_column("merchant_settlements", sa.Column("refused_by", sa.Uuid(), nullable=True))
    op.drop_constraint(op.f("ck_merchant_settlements_status"), "merchant_settlements", type_="check")
    op.create_check_constraint(
        op.f("ck_merchant_settlements_status"), "merchant_settlements", f"status IN ({_BEFORE}, 'refused')"
    )
    op.create_check_constraint(
        op.f("ck_merchant_settlements_refusal_reason"),
        "merchant_settlements",
        "(status = 'refused') = (refusal_reason IS NOT NULL)",
    )


def downgrade() -> None:
    op.drop_constraint(op.f("ck_merchant_settlements_refusal_reason"), "merchant_settlements", type_="check")
    op.drop_constraint(op.f("ck_merchant_settlements_status"), "merchant_settlements", type_="check")
    op.create_check_constraint(op.f("ck_merchant_settlements_status"), "merchant_settlements", f"status IN ({_BEFORE})")
    op.drop_column("merchant_settlements", "refused_by")
    op.drop_column("merchant_settlements", "refusal_reason")
