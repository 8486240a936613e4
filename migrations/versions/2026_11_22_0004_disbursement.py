"""Disbursement: payment batches, approvals, exclusions, entitlements and their status history.

`uq_entitlements_live_per_cycle` is the one-payment-per-programme-cycle rule; `cbi_uuid7()` makes
time-ordered ids inside set-based INSERT ... SELECT statements (a batch of 100,000 is one statement).

Revision ID: 0004_disbursement
Revises: 0003_beneficiaries
Create Date: 2026-11-22 09:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004_disbursement"
down_revision: str | Sequence[str] | None = "0003_beneficiaries"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = "status IN ('pending', 'submitted', 'issued', 'redeemed')"


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION cbi_uuid7() RETURNS uuid LANGUAGE sql VOLATILE AS $$
            SELECT encode(
                set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6), 52, 1), 53, 1),
                'hex')::uuid
        $$
        """
    )
    op.create_table(
        "payment_batches",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("programme_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("cycle", sa.String(length=32), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=20), server_default="draft", nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=True),
        sa.Column("amount_rule", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("total_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("beneficiary_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("excluded_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("approvals_needed", sa.Integer(), nullable=True),
        sa.Column("follow_up_of", sa.Uuid(), nullable=True),
        sa.Column("created_by", sa.Uuid(), nullable=False),
        sa.Column("submitted_by", sa.Uuid(), nullable=True),
        sa.Column("released_by", sa.Uuid(), nullable=True),
        sa.Column("cancelled_by", sa.Uuid(), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('draft', 'pending_approval', 'approved', 'processing', 'completed', 'rejected', 'cancelled')",
            name=op.f("ck_payment_batches_status"),
        ),
        sa.CheckConstraint(
            "(amount_minor IS NULL) <> (amount_rule IS NULL)", name=op.f("ck_payment_batches_one_amount_kind")
        ),
        sa.CheckConstraint("amount_minor IS NULL OR amount_minor > 0", name=op.f("ck_payment_batches_amount_positive")),
        sa.CheckConstraint(
            "total_minor >= 0 AND beneficiary_count >= 0 AND excluded_count >= 0",
            name=op.f("ck_payment_batches_totals"),
        ),
        sa.CheckConstraint(
            "approvals_needed IS NULL OR approvals_needed >= 1", name=op.f("ck_payment_batches_approvals_needed")
        ),
        sa.ForeignKeyConstraint(
            ["programme_id"], ["programmes.id"], name=op.f("fk_payment_batches_programme_id_programmes")
        ),
        sa.ForeignKeyConstraint(
            ["follow_up_of"], ["payment_batches.id"], name=op.f("fk_payment_batches_follow_up_of_payment_batches")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_batches")),
    )
    op.create_index("ix_payment_batches_programme", "payment_batches", ["programme_id", "id"])
    op.create_index("ix_payment_batches_status", "payment_batches", ["status", "id"])
    op.create_table(
        "batch_approvals",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("approver_id", sa.Uuid(), nullable=False),
        sa.Column("approver_name", sa.String(length=200), nullable=False),
        sa.Column("decision", sa.String(length=10), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("decision IN ('approve', 'reject')", name=op.f("ck_batch_approvals_decision")),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["payment_batches.id"], name=op.f("fk_batch_approvals_batch_id_payment_batches")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_approvals")),
    )
    op.create_index("uq_batch_approvals_batch_approver", "batch_approvals", ["batch_id", "approver_id"], unique=True)
    op.create_table(
        "batch_exclusions",
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("beneficiary_id", sa.Uuid(), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("entitlement_id", sa.Uuid(), nullable=True),
        sa.CheckConstraint(
            "reason IN ('not_found', 'not_enrolled', 'not_active', 'already_paid_in_cycle')",
            name=op.f("ck_batch_exclusions_reason"),
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["payment_batches.id"], name=op.f("fk_batch_exclusions_batch_id_payment_batches")
        ),
        sa.PrimaryKeyConstraint("batch_id", "beneficiary_id", name=op.f("pk_batch_exclusions")),
    )
    op.create_table(
        "entitlements",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("programme_id", sa.Uuid(), nullable=False),
        sa.Column("beneficiary_id", sa.Uuid(), nullable=False),
        sa.Column("cycle", sa.String(length=32), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("redeemed_minor", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("status", sa.String(length=12), server_default="pending", nullable=False),
        sa.Column("provider_ref", sa.String(length=128), nullable=True),
        sa.Column("card_token", sa.String(length=128), nullable=True),
        sa.Column("card_last4", sa.String(length=4), nullable=True),
        sa.Column("voucher_code", sa.String(length=64), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("failure_retryable", sa.Boolean(), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'submitted', 'issued', 'redeemed', 'expired', 'failed', 'cancelled')",
            name=op.f("ck_entitlements_status"),
        ),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_entitlements_amount_positive")),
        sa.CheckConstraint(
            "redeemed_minor >= 0 AND redeemed_minor <= amount_minor",
            name=op.f("ck_entitlements_redeemed_within_amount"),
        ),
        sa.CheckConstraint("card_last4 IS NULL OR card_last4 ~ '^[0-9]{4}$'", name=op.f("ck_entitlements_card_last4")),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["payment_batches.id"], name=op.f("fk_entitlements_batch_id_payment_batches")
        ),
        sa.ForeignKeyConstraint(
            ["programme_id"], ["programmes.id"], name=op.f("fk_entitlements_programme_id_programmes")
        ),
        sa.ForeignKeyConstraint(
            ["beneficiary_id"], ["beneficiaries.id"], name=op.f("fk_entitlements_beneficiary_id_beneficiaries")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entitlements")),
    )
    op.create_index("uq_entitlements_batch_beneficiary", "entitlements", ["batch_id", "beneficiary_id"], unique=True)
    op.create_index(
        "uq_entitlements_live_per_cycle",
        "entitlements",
        ["programme_id", "cycle", "beneficiary_id"],
        unique=True,
        postgresql_where=sa.text(LIVE),
    )
    op.create_index("ix_entitlements_batch_status", "entitlements", ["batch_id", "status", "id"])
    op.create_index("ix_entitlements_beneficiary", "entitlements", ["beneficiary_id", "id"])
    op.create_index("ix_entitlements_status", "entitlements", ["status", "id"])
    op.create_table(
        "entitlement_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("entitlement_id", sa.Uuid(), nullable=False),
        sa.Column("from_status", sa.String(length=12), nullable=True),
        sa.Column("to_status", sa.String(length=12), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["entitlement_id"], ["entitlements.id"], name=op.f("fk_entitlement_events_entitlement_id_entitlements")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_entitlement_events")),
    )
    op.create_index("ix_entitlement_events_entitlement", "entitlement_events", ["entitlement_id", "id"])
    op.execute(
        """
        CREATE TRIGGER entitlement_events_append_only BEFORE UPDATE OR DELETE ON entitlement_events
            FOR EACH ROW EXECUTE FUNCTION refuse_history_change();
        """
    )


def downgrade() -> None:
    op.drop_table("entitlement_events")
    op.drop_table("entitlements")
    op.drop_table("batch_exclusions")
    op.drop_table("batch_approvals")
    op.drop_table("payment_batches")
    op.execute("DROP FUNCTION cbi_uuid7()")
