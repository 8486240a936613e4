"""Reads: transactions, balances (now or as of a time), an account's entries and the trial balance.

Balances now are the account counters (one row per account); as of a time they come from the entries,
each of which carries its account's running posted balance (`balance_after`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Uuid, any_, func, literal, select, tuple_

from ledger import schema
from ledger._room import Room, array
from ledger.errors import AccountNotFound, InvalidCursor, TransactionNotFound
from ledger.types import (
    AccountEntry,
    AccountKind,
    Balance,
    EntryPage,
    Phase,
    Transaction,
    TrialBalance,
    TrialBalanceLine,
)

_MAX_SEQ = 2**63 - 1


class Reads(Room):
    """What the ledger holds, read inside the caller's transaction."""

    async def get_transaction(self, tx_id: UUID) -> Transaction:
        """The transaction with this id and its entries; raises TransactionNotFound."""
        found = await self._load_by_ids([tx_id])
        if tx_id not in found:
            raise TransactionNotFound(tx_id)
        return found[tx_id]

    async def get_transaction_by_key(self, key: str) -> Transaction | None:
        """The transaction posted under this idempotency key, if any: whether a posting happened."""
        return (await self._load_by_keys([key])).get(key)

    async def balance(self, account_id: UUID, as_of: datetime | None = None) -> Balance:
        """Posted balance and outstanding reservations, now or as they stood at `as_of`."""
        a, e, t = schema.accounts, schema.entries, schema.transactions
        if as_of is None:
            current = (await self.balances([account_id])).get(account_id)
            if current is None:
                raise AccountNotFound([account_id])
            return current
        currency = (await self._conn.execute(select(a.c.currency).where(a.c.id == account_id))).scalar()
        if currency is None:
            raise AccountNotFound([account_id])
        posted = (
            await self._conn.execute(
                select(e.c.balance_after)
                .where(e.c.account_id == account_id, e.c.posted_at <= as_of)
                .order_by(e.c.posted_at.desc(), e.c.account_seq.desc())
                .limit(1)
            )
        ).scalar()
        resolution = t.alias("resolution")
        unresolved = ~(
            select(resolution.c.id).where(resolution.c.pending_id == t.c.id, resolution.c.posted_at <= as_of).exists()
        )
        sums = (
            await self._conn.execute(
                select(
                    func.coalesce(func.sum(-e.c.amount).filter(e.c.amount < 0), 0).label("debits"),
                    func.coalesce(func.sum(e.c.amount).filter(e.c.amount > 0), 0).label("credits"),
                )
                .select_from(e.join(t, t.c.id == e.c.tx_id))
                .where(
                    e.c.account_id == account_id,
                    e.c.posted_at <= as_of,
                    t.c.phase == Phase.PENDING.value,
                    unresolved,
                )
            )
        ).one()
        return Balance(account_id, currency, posted or 0, int(sums.debits), int(sums.credits))

    async def balances(self, account_ids: Sequence[UUID]) -> dict[UUID, Balance]:
        """Current balances of several accounts in one query (unknown ids are left out)."""
        a = schema.accounts
        stmt = select(a.c.id, a.c.currency, a.c.posted, a.c.pending_debits, a.c.pending_credits).where(
            a.c.id == any_(array(list(account_ids), Uuid))
        )
        return {
            row.id: Balance(row.id, row.currency, row.posted, row.pending_debits, row.pending_credits)
            for row in await self._conn.execute(stmt)
        }

    async def balances_by_code_prefix(self, code_prefix: str) -> dict[str, Balance]:
        """Current balances of every account whose code starts with `code_prefix`, by code, in one statement
        (one snapshot: balances that move together are read together). Found through the unique index on
        codes, which compare bytewise."""
        a = schema.accounts
        low, high = _key_range(code_prefix)
        stmt = select(a.c.id, a.c.code, a.c.currency, a.c.posted, a.c.pending_debits, a.c.pending_credits).where(
            a.c.code >= low, a.c.code < high
        )
        return {
            row.code: Balance(row.id, row.currency, row.posted, row.pending_debits, row.pending_credits)
            for row in await self._conn.execute(stmt)
        }

    async def sum_posted(self, account_id: UUID, *, key_prefix: str, kind: str | None = None) -> int:
        """Sum of the account's posted entries in the transactions whose key starts with `key_prefix` (and,
        if given, of this `kind`).

        Found through the unique index on keys, so it costs what those transactions cost, however long the
        account's history: meant for callers whose keys name what they group (e.g. one programme's returns).
        """
        t, e = schema.transactions, schema.entries
        low, high = _key_range(key_prefix)
        stmt = (
            select(func.coalesce(func.sum(e.c.amount), 0))
            .select_from(t.join(e, e.c.tx_id == t.c.id))
            .where(t.c.key >= low, t.c.key < high, e.c.account_id == account_id, e.c.posted)
        )
        if kind is not None:
            stmt = stmt.where(t.c.kind == kind)
        return int((await self._conn.execute(stmt)).scalar_one())

    async def entries(self, account_id: UUID, cursor: str | None = None, limit: int = 50) -> EntryPage:
        """An account's entries oldest first, each with the posted balance right after it."""
        e, t = schema.entries, schema.transactions
        stmt = (
            select(
                e.c.tx_id,
                t.c.key,
                t.c.kind,
                t.c.phase,
                e.c.amount,
                e.c.currency,
                e.c.posted,
                e.c.posted_at,
                e.c.account_seq,
                e.c.balance_after,
                t.c.refs,
                t.c.description,
            )
            .select_from(e.join(t, t.c.id == e.c.tx_id))
            .where(e.c.account_id == account_id)
            .order_by(e.c.posted_at, e.c.account_seq)
            .limit(limit + 1)
        )
        if cursor is not None:
            at, seq = _decode_cursor(cursor)
            stmt = stmt.where(tuple_(e.c.posted_at, e.c.account_seq) > tuple_(literal(at), literal(seq)))
        items = [
            AccountEntry(
                tx_id=row.tx_id,
                tx_key=row.key,
                kind=row.kind,
                phase=Phase(row.phase),
                amount=row.amount,
                currency=row.currency,
                posted=row.posted,
                posted_at=row.posted_at,
                account_seq=row.account_seq,
                balance_after=row.balance_after,
                references=row.refs,
                description=row.description,
            )
            for row in await self._conn.execute(stmt)
        ]
        more = len(items) > limit
        items = items[:limit]
        last = items[-1] if more else None
        return EntryPage(items, None if last is None else _encode_cursor(last.posted_at, last.account_seq))

    async def trial_balance(self, as_of: datetime | None = None, *, code_prefix: str | None = None) -> TrialBalance:
        """Every account's posted balance (now, or as of a time), ordered by code."""
        a, e = schema.accounts, schema.entries
        if as_of is None:
            balance: Any = a.c.posted
        else:
            balance = func.coalesce(
                select(e.c.balance_after)
                .where(e.c.account_id == a.c.id, e.c.posted_at <= as_of)
                .order_by(e.c.posted_at.desc(), e.c.account_seq.desc())
                .limit(1)
                .scalar_subquery(),
                0,
            )
        stmt = select(a.c.id, a.c.code, a.c.kind, a.c.currency, balance.label("balance")).order_by(a.c.code)
        if code_prefix:
            stmt = stmt.where(a.c.code.startswith(code_prefix, autoescape=True))
        lines = [
            TrialBalanceLine(row.id, row.code, AccountKind(row.kind), row.currency, row.balance)
            for row in await self._conn.execute(stmt)
        ]
        return TrialBalance(as_of, lines)


def _key_range(prefix: str) -> tuple[str, str]:
    """[low, high) bounds of the keys starting with `prefix`: keys compare bytewise (COLLATE "C"), and UTF-8
    keeps code point order, so the upper bound is the prefix with its last character's successor."""
    if not prefix:
        raise ValueError("a key prefix cannot be empty")
    last = ord(prefix[-1])
    if last >= 0x10FFFF:
        raise ValueError("a key prefix cannot end with U+10FFFF")
    following = 0xE000 if 0xD7FF <= last < 0xE000 else last + 1
    return prefix, prefix[:-1] + chr(following)


def _encode_cursor(posted_at: datetime, seq: int) -> str:
    return f"{posted_at.isoformat()}~{seq}"


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    """Refuses anything `_encode_cursor` cannot have produced, including values the database cannot
    compare with (a sequence beyond a bigint, a time that leaves Python's range once converted to UTC)."""
    try:
        at, seq = cursor.rsplit("~", 1)
        value = datetime.fromisoformat(at)
        if value.tzinfo is None:
            raise ValueError("naive timestamp")
        value = value.astimezone(UTC)
        if not (seq.isascii() and seq.isdigit() and len(seq) <= 19 and int(seq) <= _MAX_SEQ):
            raise ValueError("sequence out of range")
        return value, int(seq)
    except (ValueError, OverflowError) as exc:
        raise InvalidCursor("invalid cursor") from exc
