"""A small but varied ledger posted through the real `ledger` API, shared by export and verify tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import AccountFlags, EntrySpec, Ledger, Transaction, TransactionSpec

#: Text a CSV must quote and a spreadsheet must not take for a formula.
AWKWARD_DESCRIPTION = '=SUM(A1:A9), "quoted"\nsecond line; ñandú'


@dataclass
class Book:
    transactions: list[Transaction] = field(default_factory=list)

    @property
    def entries(self) -> int:
        return sum(len(tx.entries) for tx in self.transactions)

    def posted_at(self, index: int) -> datetime:
        return self.transactions[index].posted_at


async def populate(engine: AsyncEngine, *, prefix: str = "test") -> Book:
    """Fundings, bulk transfers, a partly posted and a voided reservation, a reversal, and a JPY pair,
    each step its own database transaction on one of three chain stripes (so stripes interleave)."""
    book = Book()

    async def run(stripe: int, action):
        async with engine.begin() as conn:
            result = await action(Ledger(conn, stripe=stripe))
        book.transactions.extend(result if isinstance(result, list) else [result])
        return result

    async with engine.begin() as conn:
        ledger = Ledger(conn)
        bank = await ledger.create_account(f"{prefix}:bank", "COP", "asset")
        budget = await ledger.create_account(
            f"{prefix}:budget", "COP", "liability", flags=AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
        )
        paid = await ledger.create_account(f"{prefix}:paid", "COP", "expense")
        yen_in = await ledger.create_account(f"{prefix}:yen-in", "JPY", "asset")
        yen_out = await ledger.create_account(f"{prefix}:yen-out", "JPY", "equity")

    def transfer(key: str, source, target, amount: int, **kw) -> TransactionSpec:
        return TransactionSpec(key=key, entries=[EntrySpec(source.id, -amount), EntrySpec(target.id, amount)], **kw)

    await run(
        0,
        lambda lg: lg.post(
            transfer(
                f"{prefix}-fund-1",
                bank,
                budget,
                100_000_000,
                kind="funding",
                references={"source": "ECHO", "reference": "grant 7"},
                description=AWKWARD_DESCRIPTION,
            )
        ),
    )
    await run(1, lambda lg: lg.post_many([transfer(f"{prefix}-pay-{i}", budget, paid, 123_456 + i) for i in range(8)]))
    reserved = await run(2, lambda lg: lg.post(transfer(f"{prefix}-hold-1", budget, paid, 50_000, pending=True)))
    await run(0, lambda lg: lg.post_pending(reserved.id, f"{prefix}-hold-1-post", 30_000))
    voided = await run(1, lambda lg: lg.post(transfer(f"{prefix}-hold-2", budget, paid, 20_000, pending=True)))
    await run(2, lambda lg: lg.void_pending(voided.id, f"{prefix}-hold-2-void"))
    await run(0, lambda lg: lg.reverse(book.transactions[1].id, f"{prefix}-pay-0-reversal"))
    await run(1, lambda lg: lg.post(transfer(f"{prefix}-yen", yen_out, yen_in, 1_500, kind="transfer")))
    await run(2, lambda lg: lg.post(transfer(f"{prefix}-fund-2", bank, budget, 5_000_000, kind="funding")))
    return book
