"""Registry re-checks back off (§15): a person the registry did not answer for is asked again only once their
`next_attempt_at` has come (later each time), so people it keeps refusing no longer hold the head of the
queue; the queue is read by registry and due time.

Revision ID: 0022_registry_recheck_backoff
Revises: 0021_five_w_reporting
Create Date: 2026-12-14 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022_registry_recheck_backoff"
down_revision: str | Sequence[str] | None = "0021_five_w_reporting"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Everyone waiting now is due now, as they were.
    op.add_column(
        "dedup_registry_rechecks",
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.drop_index("ix_dedup_registry_rechecks_registry_created", table_name="dedup_registry_rechecks")
    op.create_index(
        "ix_dedup_registry_rechecks_registry_due", "dedup_registry_rechecks", ["registry_name", "next_attempt_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_dedup_registry_rechecks_registry_due", table_name="dedup_registry_rechecks")
    op.create_index(
        "ix_dedup_registry_rechecks_registry_created", "dedup_registry_rechecks", ["registry_name", "created_at"]
    )
    op.drop_column("dedup_registry_rechecks", "next_attempt_at")
