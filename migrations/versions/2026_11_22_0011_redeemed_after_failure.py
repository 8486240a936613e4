"""Reconciliation breaks: a redemption of a voucher that failed here, once its budget is gone.

Revision ID: 0011_redeemed_after_failure
Revises: 0010_reconciliation_breaks
Create Date: 2026-12-07 01:00:00

Redemptions come in parts, each its own break: only loads stay unique per entitlement and kind. The
downgrade fails while breaks of the new kind are kept (they are finance's records, never dropped here).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_redeemed_after_failure"
down_revision: str | Sequence[str] | None = "0010_reconciliation_breaks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KINDS = "'issued_after_failure', 'issued_after_cancel', 'redeemed_after_expiry'"
_CHECK = "ck_reconciliation_breaks_kind"
_LOADS = "uq_reconciliation_breaks_issue"


def upgrade() -> None:
    op.drop_constraint(op.f(_CHECK), "reconciliation_breaks", type_="check")
    op.create_check_constraint(op.f(_CHECK), "reconciliation_breaks", f"kind IN ({_KINDS}, 'redeemed_after_failure')")
    op.drop_index(_LOADS, table_name="reconciliation_breaks")
    op.create_index(
        _LOADS,
        "reconciliation_breaks",
        ["entitlement_id", "kind"],
        unique=True,
        postgresql_where=sa.text("kind IN ('issued_after_failure', 'issued_after_cancel')"),
    )


def downgrade() -> None:
    op.drop_index(_LOADS, table_name="reconciliation_breaks")
    op.create_index(
        _LOADS,
        "reconciliation_breaks",
        ["entitlement_id", "kind"],
        unique=True,
        postgresql_where=sa.text("kind <> 'redeemed_after_expiry'"),
    )
    op.drop_constraint(op.f(_CHECK), "reconciliation_breaks", type_="check")
    op.create_check_constraint(op.f(_CHECK), "reconciliation_breaks", f"kind IN ({_KINDS})")
