"""Beneficiaries: people, blocking keys for dedup, adjudications, enrolments, bulk imports.

Revision ID: 0003_beneficiaries
Revises: 0002_ledger
Create Date: 2026-11-22 08:29:25.285948
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003_beneficiaries"
down_revision: str | Sequence[str] | None = "0002_ledger"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "beneficiaries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("given_names", sa.String(length=200), nullable=False),
        sa.Column("family_names", sa.String(length=200), nullable=False),
        sa.Column("date_of_birth", sa.Date(), nullable=False),
        sa.Column("sex", sa.String(length=10), nullable=False),
        sa.Column("nationality", sa.String(length=2), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=True),
        sa.Column("location_country", sa.String(length=2), nullable=False),
        sa.Column("location_admin1", sa.String(length=200), nullable=True),
        sa.Column("location_admin2", sa.String(length=200), nullable=True),
        sa.Column("household_size", sa.Integer(), nullable=False),
        sa.Column("external_ref", sa.String(length=100), nullable=True),
        sa.Column("consent_date", sa.Date(), nullable=False),
        sa.Column("consent_purpose", sa.String(length=500), nullable=False),
        sa.Column("documents", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("match_profile", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("registered_by", sa.Uuid(), nullable=False),
        sa.Column("corrected_by", postgresql.ARRAY(sa.Uuid()), server_default="{}", nullable=False),
        sa.Column("duplicate_of", sa.Uuid(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("location_country ~ '^[A-Z]{2}$'", name=op.f("ck_beneficiaries_location_country")),
        sa.CheckConstraint("nationality ~ '^[A-Z]{2}$'", name=op.f("ck_beneficiaries_nationality")),
        sa.CheckConstraint("sex IN ('female', 'male', 'other', 'unknown')", name=op.f("ck_beneficiaries_sex")),
        sa.CheckConstraint(
            "status IN ('active', 'pending_adjudication', 'duplicate', 'inactive')",
            name=op.f("ck_beneficiaries_status"),
        ),
        sa.CheckConstraint("household_size >= 1", name=op.f("ck_beneficiaries_household_size")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_beneficiaries")),
    )
    op.create_index(
        "ix_beneficiaries_external_ref",
        "beneficiaries",
        ["external_ref"],
        unique=False,
        postgresql_where=sa.text("external_ref IS NOT NULL"),
    )
    op.create_index("ix_beneficiaries_status_id", "beneficiaries", ["status", "id"], unique=False)
    op.create_table(
        "beneficiary_imports",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=10), server_default="queued", nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("file_format", sa.String(length=4), nullable=False),
        sa.Column("rows_total", sa.Integer(), nullable=True),
        sa.Column("rows_done", sa.Integer(), server_default="0", nullable=False),
        sa.Column("counts", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("created_by", sa.Uuid(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("file_format IN ('csv', 'xlsx')", name=op.f("ck_beneficiary_imports_file_format")),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'completed', 'failed')", name=op.f("ck_beneficiary_imports_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_beneficiary_imports")),
    )
    op.create_table(
        "adjudications",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("beneficiary_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=10), server_default="open", nullable=False),
        sa.Column("matches", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("decision", sa.String(length=20), nullable=True),
        sa.Column("note", sa.String(length=2000), nullable=True),
        sa.Column("decided_by", sa.Uuid(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "(status = 'decided') = (decision IS NOT NULL)", name=op.f("ck_adjudications_decided_has_decision")
        ),
        sa.CheckConstraint(
            "decision IS NULL OR decision IN ('duplicate', 'not_duplicate')", name=op.f("ck_adjudications_decision")
        ),
        sa.CheckConstraint("status IN ('open', 'decided', 'withdrawn')", name=op.f("ck_adjudications_status")),
        sa.ForeignKeyConstraint(
            ["beneficiary_id"], ["beneficiaries.id"], name=op.f("fk_adjudications_beneficiary_id_beneficiaries")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adjudications")),
    )
    op.create_index("ix_adjudications_status_id", "adjudications", ["status", "id"], unique=False)
    op.create_index(
        "uq_adjudications_open_beneficiary",
        "adjudications",
        ["beneficiary_id"],
        unique=True,
        postgresql_where=sa.text("status = 'open'"),
    )
    op.create_table(
        "beneficiary_import_chunks",
        sa.Column("import_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["beneficiary_imports.id"],
            name=op.f("fk_beneficiary_import_chunks_import_id_beneficiary_imports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("import_id", "seq", name=op.f("pk_beneficiary_import_chunks")),
    )
    op.create_table(
        "beneficiary_import_rows",
        sa.Column("import_id", sa.Uuid(), nullable=False),
        sa.Column("row_number", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=24), nullable=False),
        sa.Column("beneficiary_id", sa.Uuid(), nullable=True),
        sa.Column("matches", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("errors", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.CheckConstraint(
            "outcome IN ('created', 'duplicate', 'pending_adjudication', 'invalid')",
            name=op.f("ck_beneficiary_import_rows_outcome"),
        ),
        sa.ForeignKeyConstraint(
            ["import_id"],
            ["beneficiary_imports.id"],
            name=op.f("fk_beneficiary_import_rows_import_id_beneficiary_imports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("import_id", "row_number", name=op.f("pk_beneficiary_import_rows")),
    )
    op.create_index(
        "ix_beneficiary_import_rows_outcome",
        "beneficiary_import_rows",
        ["import_id", "outcome", "row_number"],
        unique=False,
    )
    op.create_table(
        "dedup_keys",
        sa.Column("key", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("beneficiary_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["beneficiary_id"],
            ["beneficiaries.id"],
            name=op.f("fk_dedup_keys_beneficiary_id_beneficiaries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key", "beneficiary_id", name=op.f("pk_dedup_keys")),
    )
    op.create_index("ix_dedup_keys_beneficiary_id", "dedup_keys", ["beneficiary_id"], unique=False)
    op.create_table(
        "enrolments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("programme_id", sa.Uuid(), nullable=False),
        sa.Column("beneficiary_id", sa.Uuid(), nullable=False),
        sa.Column("enrolled_by", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["beneficiary_id"], ["beneficiaries.id"], name=op.f("fk_enrolments_beneficiary_id_beneficiaries")
        ),
        sa.ForeignKeyConstraint(
            ["programme_id"], ["programmes.id"], name=op.f("fk_enrolments_programme_id_programmes")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrolments")),
        sa.UniqueConstraint("programme_id", "beneficiary_id", name="uq_enrolments_programme_beneficiary"),
    )
    op.create_index("ix_enrolments_beneficiary_id", "enrolments", ["beneficiary_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_enrolments_beneficiary_id", table_name="enrolments")
    op.drop_table("enrolments")
    op.drop_index("ix_dedup_keys_beneficiary_id", table_name="dedup_keys")
    op.drop_table("dedup_keys")
    op.drop_index("ix_beneficiary_import_rows_outcome", table_name="beneficiary_import_rows")
    op.drop_table("beneficiary_import_rows")
    op.drop_table("beneficiary_import_chunks")
    op.drop_index(
        "uq_adjudications_open_beneficiary", table_name="adjudications", postgresql_where=sa.text("status = 'open'")
    )
    op.drop_index("ix_adjudications_status_id", table_name="adjudications")
    op.drop_table("adjudications")
    op.drop_table("beneficiary_imports")
    op.drop_index("ix_beneficiaries_status_id", table_name="beneficiaries")
    op.drop_index(
        "ix_beneficiaries_external_ref",
        table_name="beneficiaries",
        postgresql_where=sa.text("external_ref IS NOT NULL"),
    )
    op.drop_table("beneficiaries")
