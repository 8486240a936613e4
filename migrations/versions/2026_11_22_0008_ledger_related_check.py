"""Ledger: a transaction's pending and reversed transaction checked only where it names one.

The foreign keys on `transactions.pending_id` and `transactions.reverses_id` queued two checks for every
inserted transaction, each fetching the new row again, although almost every transaction names neither:
about a twelfth of the database's work in a bulk posting. A row trigger whose WHEN clause is evaluated
as the row is inserted does the same check only for the rows that name one, and checks more than a
foreign key could: a resolution names a pending transaction, a reversal a posted one. Nothing is lost
by dropping the foreign keys' other half, which guards referenced rows against deletion or a changed
id: transactions are append-only (`transactions_append_only` refuses every UPDATE, DELETE and TRUNCATE).
The SQL is in `ledger/sql/0008_related_check.sql`.

Revision ID: 0008_ledger_related_check
Revises: 0007_ledger_write_paths
Create Date: 2026-11-22 15:00:00
"""

from collections.abc import Sequence

from alembic import op

from ledger.schema import sql_statements

revision: str = "0008_ledger_related_check"
down_revision: str | Sequence[str] | None = "0007_ledger_write_paths"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE ledger.transactions DROP CONSTRAINT transactions_pending_id_fkey")
    op.execute("ALTER TABLE ledger.transactions DROP CONSTRAINT transactions_reverses_id_fkey")
    for statement in sql_statements("0008_related_check.sql"):
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER transactions_related_exist ON ledger.transactions")
    op.execute("DROP FUNCTION ledger.check_related_transaction()")
    op.execute(
        "ALTER TABLE ledger.transactions ADD CONSTRAINT transactions_pending_id_fkey"
        " FOREIGN KEY (pending_id) REFERENCES ledger.transactions (id)"
    )
    op.execute(
        "ALTER TABLE ledger.transactions ADD CONSTRAINT transactions_reverses_id_fkey"
        " FOREIGN KEY (reverses_id) REFERENCES ledger.transactions (id)"
    )
