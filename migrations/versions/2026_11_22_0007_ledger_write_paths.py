"""Ledger write paths: index probes only, and the counter guard checked once per statement.

- `ledger.post_one` looked for an earlier resolution of the same pending transaction, or reversal of the
  same transaction, with one `pending_id = $1 OR reverses_id = $2` condition, for which the planner could
  (and, on a table without fresh statistics, did) scan the whole transactions table at every posting. It
  now probes only the partial unique index that applies, and only when the posting resolves or reverses
  something.
- `ledger.post_one` moved the account counters with a join that the planner could turn into a scan of
  every account; it now updates the locked accounts by primary key.
- `ledger.post_one` and `ledger.begin_posting` first try the caller's preferred chain stripe with one
  probe, and search (and sort) the stripes only when another transaction holds it.
- The guard that an account's counters are the running balance of its last entry ran at commit, one
  trigger call per updated account (a thousand calls at the commit of a bulk posting over a thousand
  accounts). It is now one set-based query at the end of each UPDATE of accounts, over the updated rows
  (a transition table). Both writers insert the entries before they move the counters; a write that
  moves the counters first is now refused at once rather than at commit.

The SQL is in `ledger/sql/`: the counter guard in `0007_account_counters.sql`, the functions in their one
definition, `post_one.sql` and `begin_posting.sql`, which 0002_ledger installs on databases made since.

Revision ID: 0007_ledger_write_paths
Revises: 0006_audit_reports
Create Date: 2026-11-22 11:00:00
"""

from collections.abc import Sequence

from alembic import op

from ledger.schema import sql_statements

revision: str = "0007_ledger_write_paths"
down_revision: str | Sequence[str] | None = "0006_audit_reports"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DROP TRIGGER accounts_counters_match_entries ON ledger.accounts")
    for name in ("0007_account_counters.sql", "post_one.sql", "begin_posting.sql"):
        for statement in sql_statements(name):
            op.execute(statement)


def downgrade() -> None:
    """Back to 0002_ledger's counter guard, run from that revision's file. `post_one` and `begin_posting`
    keep their one definition: the one they replaced had the same rules, only slower plans."""
    op.execute("DROP TRIGGER accounts_counters_match_entries ON ledger.accounts")
    for name in ("0002_account_counters.sql",):
        for statement in sql_statements(name):
            op.execute(statement)
