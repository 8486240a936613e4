"""Ledger accounts keep room on each page, so that moving their counters is a heap-only update.

Every posting rewrites the counters of the accounts it touches, and a bulk posting those of every account
it names. With full pages the new row versions went to other pages: each update inserted into both of the
table's indexes, and the table grew by a copy of the touched rows per bulk posting until vacuumed (5,000
updates of 1,000 accounts, 163 of them heap-only; 786 kB for 1,000 accounts). With half of each page kept
free, a row's new version fits beside the old one, which the next reader of the page prunes (5,000 of
5,000 heap-only; 279 kB; the counter update of a bulk posting over 1,000 accounts took 7.5 ms instead of
10.6 ms). Pages written before this migration fill up as they were; rows move to new, half-filled pages
as they are updated, or at once with VACUUM FULL.

Revision ID: 0009_ledger_accounts_fillfactor
Revises: 0008_ledger_related_check
Create Date: 2026-11-22 16:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009_ledger_accounts_fillfactor"
down_revision: str | Sequence[str] | None = "0008_ledger_related_check"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE ledger.accounts SET (fillfactor = 50)")


def downgrade() -> None:
    op.execute("ALTER TABLE ledger.accounts RESET (fillfactor)")
