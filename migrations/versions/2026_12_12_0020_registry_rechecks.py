"""External registries that could not answer (§15): the people to ask them about again once they do, and
which registries could not answer for each row of a bulk import.

Revision ID: 0020_registry_rechecks
Revises: 0019_merchant_settlements
Create Date: 2026-12-12 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020_registry_rechecks"
down_revision: str | Sequence[str] | None = "0019_merchant_settlements"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dedup_registry_rechecks",
        sa.Column("beneficiary_id", sa.Uuid(), nullable=False),
        sa.Column("registry_name", sa.String(length=100), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["beneficiary_id"],
            ["beneficiaries.id"],
            name=op.f("fk_dedup_registry_rechecks_beneficiary_id_beneficiaries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("beneficiary_id", "registry_name", name=op.f("pk_dedup_registry_rechecks")),
    )
    op.create_index(
        "ix_dedup_registry_rechecks_registry_created", "dedup_registry_rechecks", ["registry_name", "created_at"]
    )
    op.add_column(
        "beneficiary_import_rows",
        sa.Column("registries_unavailable", sa.ARRAY(sa.String(length=100)), server_default="{}", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("beneficiary_import_rows", "registries_unavailable")
    op.drop_index("ix_dedup_registry_rechecks_registry_created", table_name="dedup_registry_rechecks")
    op.drop_table("dedup_registry_rechecks")
