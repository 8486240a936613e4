"""The ledger: accounts, balanced append-only transactions, two-phase transfers, balances and the chain.

`Ledger` works on a caller-supplied `AsyncConnection` and never commits: postings become durable with the
caller's transaction, together with whatever else the caller wrote. It is one object made of the rooms
that hold its operations, each in its own module:

- `ledger.accounts`: create_account, get_account, get_accounts_by_code, list_accounts;
- `ledger.posting`: post, post_many, post_each, post_pending, void_pending, reverse (and its concurrency);
- `ledger.reads`: get_transaction, get_transaction_by_key, balance, balances, sum_posted, entries,
  trial_balance;
- `ledger.audit`: export_rows, verify_chain, verify_balances.

All of them are the package's API. The service around it uses accounts, plain and bulk postings and the
reads its HTTP API serves; two-phase transfers (`post_pending`, `void_pending`), corrections (`reverse`),
an account's balance as of a time (`balance`), single transactions by id or key (`get_transaction`,
`get_transaction_by_key`) and the audits are what a double-entry ledger offers any caller, used today by
the tests and the benchmarks.
"""

from __future__ import annotations

import secrets

from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.accounts import Accounts
from ledger.audit import Audit
from ledger.posting import Posting
from ledger.reads import Reads


class Ledger(Accounts, Posting, Reads, Audit):
    """Double-entry ledger operations on one connection, inside the caller's transaction."""

    def __init__(self, conn: AsyncConnection, *, stripe: int | None = None) -> None:
        """`stripe` is the chain stripe this instance tries first in a database transaction that holds
        none yet (random by default, which spreads concurrent writers); any free stripe is taken when it
        is busy, and a transaction that already holds one keeps appending to it."""
        super().__init__(conn)
        self._stripe = secrets.randbelow(1 << 15) if stripe is None else stripe
