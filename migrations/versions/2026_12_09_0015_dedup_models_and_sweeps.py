"""Dedup: stored match models (one active), registry-wide sweeps with the pairs they found, and the pairs
sweeps put before adjudicators (one adjudication per pair, ever).

Revision ID: 0015_dedup_models_and_sweeps
Revises: 0014_initials_blocking_key
Create Date: 2026-12-09 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015_dedup_models_and_sweeps"
down_revision: str | Sequence[str] | None = "0014_initials_blocking_key"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dedup_models",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("artefact", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("trained", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("active", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dedup_models")),
        sa.UniqueConstraint("version", name=op.f("uq_dedup_models_version")),
    )
    op.create_index(
        "uq_dedup_models_active", "dedup_models", ["active"], unique=True, postgresql_where=sa.text("active")
    )
    op.create_table(
        "dedup_sweeps",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=10), server_default="queued", nullable=False),
        sa.Column("programme_id", sa.Uuid(), nullable=True),
        sa.Column("engine", sa.String(length=10), server_default="duckdb", nullable=False),
        sa.Column("model_version", sa.String(length=100), nullable=True),
        sa.Column("review_threshold", sa.Float(), nullable=True),
        sa.Column("records", sa.Integer(), nullable=True),
        sa.Column("chunks_total", sa.Integer(), nullable=True),
        sa.Column("chunks_done", sa.ARRAY(sa.Integer()), server_default="{}", nullable=False),
        sa.Column("input_digest", sa.String(length=64), nullable=True),
        sa.Column("pairs_compared", sa.Integer(), server_default="0", nullable=False),
        sa.Column("pairs_matched", sa.Integer(), server_default="0", nullable=False),
        sa.Column("adjudications_opened", sa.Integer(), server_default="0", nullable=False),
        sa.Column("pairs_sent_to_adjudication", sa.Integer(), server_default="0", nullable=False),
        sa.Column("clusters", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'completed', 'failed')", name=op.f("ck_dedup_sweeps_status")
        ),
        sa.CheckConstraint("engine IN ('duckdb', 'spark')", name=op.f("ck_dedup_sweeps_engine")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dedup_sweeps")),
    )
    op.create_index("ix_dedup_sweeps_status_id", "dedup_sweeps", ["status", "id"], unique=False)
    op.create_table(
        "dedup_sweep_pairs",
        sa.Column("sweep_id", sa.Uuid(), nullable=False),
        sa.Column("low_id", sa.Uuid(), nullable=False),
        sa.Column("high_id", sa.Uuid(), nullable=False),
        sa.Column("chunk", sa.Integer(), nullable=False),
        sa.Column("match_probability", sa.Float(), nullable=False),
        sa.Column("match_weight", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["sweep_id"],
            ["dedup_sweeps.id"],
            name=op.f("fk_dedup_sweep_pairs_sweep_id_dedup_sweeps"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("sweep_id", "low_id", "high_id", name=op.f("pk_dedup_sweep_pairs")),
    )
    op.create_index("ix_adjudications_beneficiary_id", "adjudications", ["beneficiary_id"], unique=False)
    op.create_table(
        "adjudication_pairs",
        sa.Column("low_id", sa.Uuid(), nullable=False),
        sa.Column("high_id", sa.Uuid(), nullable=False),
        sa.Column("adjudication_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["adjudication_id"],
            ["adjudications.id"],
            name=op.f("fk_adjudication_pairs_adjudication_id_adjudications"),
            deferrable=True,
            initially="DEFERRED",
        ),
        sa.ForeignKeyConstraint(
            ["high_id"], ["beneficiaries.id"], name=op.f("fk_adjudication_pairs_high_id_beneficiaries")
        ),
        sa.ForeignKeyConstraint(
            ["low_id"], ["beneficiaries.id"], name=op.f("fk_adjudication_pairs_low_id_beneficiaries")
        ),
        sa.PrimaryKeyConstraint("low_id", "high_id", name=op.f("pk_adjudication_pairs")),
    )
    op.create_index("ix_adjudication_pairs_adjudication_id", "adjudication_pairs", ["adjudication_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_adjudication_pairs_adjudication_id", table_name="adjudication_pairs")
    op.drop_table("adjudication_pairs")
    op.drop_index("ix_adjudications_beneficiary_id", table_name="adjudications")
    op.drop_table("dedup_sweep_pairs")
    op.drop_index("ix_dedup_sweeps_status_id", table_name="dedup_sweeps")
    op.drop_table("dedup_sweeps")
    op.drop_index("uq_dedup_models_active", table_name="dedup_models", postgresql_where=sa.text("active"))
    op.drop_table("dedup_models")
