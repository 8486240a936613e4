"""Webhooks: the provider-event inbox (unique on provider + webhook-id).

Revision ID: 0005_webhooks
Revises: 0004_disbursement
Create Date: 2026-11-22 08:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005_webhooks"
down_revision: str | Sequence[str] | None = "0004_disbursement"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=100), nullable=False),
        sa.Column("webhook_id", sa.String(length=255), nullable=False),
        sa.Column("event_type", sa.String(length=40), nullable=False),
        sa.Column("entitlement_id", sa.Uuid(), nullable=False),
        sa.Column("provider_ref", sa.String(length=128), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("event", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=12), server_default="received", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('received', 'applied', 'ignored', 'refused', 'unmatched', 'failed')",
            name=op.f("ck_webhook_events_status"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_webhook_events_attempts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
    )
    op.create_index("uq_webhook_events_provider_webhook_id", "webhook_events", ["provider", "webhook_id"], unique=True)
    op.create_index(
        "ix_webhook_events_pending",
        "webhook_events",
        ["occurred_at", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'received'"),
    )
    op.create_index(
        "ix_webhook_events_unmatched",
        "webhook_events",
        ["id"],
        unique=False,
        postgresql_where=sa.text("status = 'unmatched'"),
    )
    op.create_index(
        "ix_webhook_events_review",
        "webhook_events",
        ["id"],
        unique=False,
        postgresql_where=sa.text("status IN ('refused', 'failed')"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_webhook_events_review",
        table_name="webhook_events",
        postgresql_where=sa.text("status IN ('refused', 'failed')"),
    )
    op.drop_index(
        "ix_webhook_events_unmatched", table_name="webhook_events", postgresql_where=sa.text("status = 'unmatched'")
    )
    op.drop_index(
        "ix_webhook_events_pending", table_name="webhook_events", postgresql_where=sa.text("status = 'received'")
    )
    op.drop_index("uq_webhook_events_provider_webhook_id", table_name="webhook_events")
    op.drop_table("webhook_events")
