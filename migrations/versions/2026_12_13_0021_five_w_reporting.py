"""5W reporting (§16): beneficiaries' R4V population group, programmes' reporting identity, and monthly
exchange rates to USD with their source.

Revision ID: 0021_five_w_reporting
Revises: 0020_registry_rechecks
Create Date: 2026-12-12 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021_five_w_reporting"
down_revision: str | Sequence[str] | None = "0020_registry_rechecks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

POPULATION_TYPES = "'in_destination', 'in_transit', 'pendular', 'returnee', 'host_community'"
# Nullable: programmes made before §16 have none until it is set (PATCH /v1/programmes/{id}).
REPORTING_COLUMNS = {
    "appealing_organisation": sa.String(length=200),
    "implementing_partner": sa.String(length=200),
    "indicator": sa.String(length=500),
    "activity_name": sa.String(length=200),
    "activity_description": sa.String(length=1000),
    "rmrp_activity": sa.Boolean(),
}


def upgrade() -> None:
    # Everyone registered so far counts as in destination, the contract's default group.
    op.add_column(
        "beneficiaries",
        sa.Column("population_type", sa.String(length=20), server_default="in_destination", nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_beneficiaries_population_type"), "beneficiaries", f"population_type IN ({POPULATION_TYPES})"
    )
    for name, type_ in REPORTING_COLUMNS.items():
        op.add_column("programmes", sa.Column(name, type_, nullable=True))
    op.create_table(
        "fx_rates",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("usd_per_unit", sa.Numeric(), nullable=False),
        sa.Column("source", sa.String(length=500), nullable=False),
        sa.Column("recorded_by", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$' AND currency <> 'USD'", name=op.f("ck_fx_rates_currency")),
        sa.CheckConstraint("month ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'", name=op.f("ck_fx_rates_month")),
        sa.CheckConstraint("usd_per_unit > 0", name=op.f("ck_fx_rates_usd_per_unit_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fx_rates")),
    )
    op.create_index("uq_fx_rates_currency_month", "fx_rates", ["currency", "month"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_fx_rates_currency_month", table_name="fx_rates")
    op.drop_table("fx_rates")
    for name in reversed(REPORTING_COLUMNS):
        op.drop_column("programmes", name)
    op.drop_constraint(op.f("ck_beneficiaries_population_type"), "beneficiaries", type_="check")
    op.drop_column("beneficiaries", "population_type")
