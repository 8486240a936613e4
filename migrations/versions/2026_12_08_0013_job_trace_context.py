"""Jobs keep the W3C traceparent of the span that enqueued them, so their run continues its trace.

Revision ID: 0013_job_trace_context
Revises: 0012_paper_vouchers
Create Date: 2026-12-08 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_job_trace_context"
down_revision: str | Sequence[str] | None = "0012_paper_vouchers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("traceparent", sa.String(length=55), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "traceparent")
