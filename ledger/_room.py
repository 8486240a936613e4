"""What the parts of `Ledger` share: the caller's connection, loading transactions, and rows made types."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import uuid_utils
from asyncpg.pgproto.pgproto import UUID as WireUUID
from sqlalchemy import ARRAY, Text, Uuid, any_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger import schema
from ledger.types import Account, AccountFlags, AccountKind, Entry, Phase, Transaction

ACCOUNT_COLUMNS = (
    schema.accounts.c.id,
    schema.accounts.c.code,
    schema.accounts.c.currency,
    schema.accounts.c.kind,
    schema.accounts.c.flags,
    schema.accounts.c.metadata,
    schema.accounts.c.created_at,
)

TX_COLUMNS = (
    schema.transactions.c.id,
    schema.transactions.c.key,
    schema.transactions.c.kind,
    schema.transactions.c.phase,
    schema.transactions.c.currency,
    schema.transactions.c.refs,
    schema.transactions.c.description,
    schema.transactions.c.posted_at,
    schema.transactions.c.chain,
    schema.transactions.c.seq,
    schema.transactions.c.prev_hash,
    schema.transactions.c.hash,
    schema.transactions.c.pending_id,
    schema.transactions.c.reverses_id,
)


class Room:
    """A part of `Ledger`: its operations on the caller's connection, inside the caller's transaction."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def _load_by_keys(self, keys: list[str]) -> dict[str, Transaction]:
        if not keys:
            return {}
        rows = await self._load(schema.transactions.c.key == any_(array(keys, Text)))
        return {tx.key: tx for tx in rows}

    async def _load_by_ids(self, ids: list[UUID]) -> dict[UUID, Transaction]:
        rows = await self._load(schema.transactions.c.id == any_(array(ids, Uuid)))
        return {tx.id: tx for tx in rows}

    async def _load(self, condition: Any) -> list[Transaction]:
        t, e, a = schema.transactions, schema.entries, schema.accounts
        stmt = (
            select(
                *TX_COLUMNS,
                e.c.account_id,
                a.c.code,
                e.c.amount,
                e.c.posted.label("entry_posted"),
                e.c.account_seq,
                e.c.balance_after,
            )
            .select_from(t.join(e, e.c.tx_id == t.c.id).join(a, a.c.id == e.c.account_id))
            .where(condition)
            .order_by(t.c.id, e.c.idx)
        )
        out: dict[UUID, Transaction] = {}
        for row in await self._conn.execute(stmt):
            tx = out.get(row.id)
            if tx is None:
                tx = out[row.id] = _transaction(row)
            tx.entries.append(
                Entry(row.account_id, row.code, row.amount, row.entry_posted, row.account_seq, row.balance_after)
            )
        return list(out.values())


def new_id() -> UUID:
    """A time-ordered UUID (version 7), as asyncpg's own UUID type: a `uuid.UUID` that asyncpg encodes
    without a conversion and that formats itself in C (bulk postings make and hash one per transaction)."""
    return WireUUID(uuid_utils.uuid7().bytes)


def array(values: list[Any], item_type: type[Text] | type[Uuid[Any]]) -> Any:
    return bindparam(None, values, type_=ARRAY(item_type()))


def account(row: Any) -> Account:
    return Account(
        id=row.id,
        code=row.code,
        currency=row.currency,
        kind=AccountKind(row.kind),
        flags=AccountFlags(row.flags),
        metadata=row.metadata,
        created_at=row.created_at,
    )


def _transaction(row: Any) -> Transaction:
    """A transaction without its entries, which the caller appends."""
    return Transaction(
        id=row.id,
        key=row.key,
        kind=row.kind,
        phase=Phase(row.phase),
        currency=row.currency,
        entries=[],
        references=row.refs,
        description=row.description,
        posted_at=row.posted_at,
        chain=row.chain,
        seq=row.seq,
        prev_hash=bytes(row.prev_hash),
        hash=bytes(row.hash),
        pending_id=row.pending_id,
        reverses_id=row.reverses_id,
    )
