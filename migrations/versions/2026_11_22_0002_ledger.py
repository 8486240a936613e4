"""Ledger: accounts, append-only transactions and entries, striped hash chains, database guards.

Everything lives in the PostgreSQL schema `ledger` so the `ledger` package stays usable on its own.

Guards enforced by the database itself, whatever code writes:
- transactions and entries refuse UPDATE, DELETE and TRUNCATE (history is append-only);
- accounts refuse DELETE and any change of identity (code, currency, kind, flags); only the balance
  counters move, and CHECK constraints keep them within the account's flags;
- the balance counters cannot be set apart from the entries: an account starts at zero, its counters move
  only together with `entry_seq` (i.e. with a new entry), and a DEFERRABLE INITIALLY DEFERRED constraint
  trigger checks at commit that the account's last entry (found with one probe of the entries index by
  account, `last_posted_at` and `entry_seq`) exists and carries `balance_after` = `posted`. An UPDATE of
  `posted` alone is therefore refused; `Ledger.verify_balances` re-adds every account's entries for audits;
- every INSERT statement into entries is checked set-wise (account exists, currencies agree, transaction
  exists); a statement that leaves some transaction unbalanced queues that transaction in
  `ledger.balance_checks`, whose DEFERRABLE INITIALLY DEFERRED constraint trigger re-checks the sum at
  commit and refuses the commit if it is still not zero. Balanced bulk writes therefore pay one set-based
  check per statement instead of one trigger call per row.

Functions used by the `ledger` package: `ledger.post_one` (a whole single posting in one round trip) and
`ledger.begin_posting` (the locks and counters a bulk posting plans against). Hash chains are 64 stripes
(`ledger.chains`); see `ledger/chain.py` for the canonical encoding both sides hash. The SQL is in
`ledger/sql/`: this revision's tables and guards in `0002_*.sql`, and the functions' one definition in
`begin_posting.sql` and `post_one.sql`.

Revision ID: 0002_ledger
Revises: 0001_foundation
Create Date: 2026-11-22 09:00:00
"""

from collections.abc import Sequence

from alembic import op

from ledger.schema import sql_statements

revision: str = "0002_ledger"
down_revision: str | Sequence[str] | None = "0001_foundation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: In the order they run; `ledger/sql/` holds them (see `ledger.schema`).
FILES = (
    "0002_tables.sql",
    "0002_guards.sql",
    "0002_account_counters.sql",
    "0002_entry_checks.sql",
    "begin_posting.sql",
    "post_one.sql",
)


def upgrade() -> None:
    for name in FILES:
        for statement in sql_statements(name):
            op.execute(statement)


def downgrade() -> None:
    op.execute("DROP SCHEMA ledger CASCADE")
