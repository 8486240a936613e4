"""Accounts: created once by code (idempotently), never deleted, their identity fixed by the database."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import Text, any_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert

from ledger import schema
from ledger._room import ACCOUNT_COLUMNS, Room, account, array, new_id
from ledger.errors import AccountConflict, AccountNotFound, InvalidAccount
from ledger.types import Account, AccountFlags, AccountKind, AccountPage


class Accounts(Room):
    """Creating, finding and listing accounts."""

    async def create_account(
        self,
        code: str,
        currency: str,
        kind: AccountKind | str,
        *,
        flags: AccountFlags = AccountFlags.NONE,
        metadata: Mapping[str, Any] | None = None,
    ) -> Account:
        """Create the account, or return the existing one with this code if it matches.

        Raises AccountConflict when the code exists with another currency, kind or flags.
        """
        kind = AccountKind(kind)
        if not isinstance(code, str) or not 1 <= len(code) <= 200 or "\x00" in code:
            raise InvalidAccount("an account code is 1 to 200 characters, without NUL")
        if not (len(currency) == 3 and currency.isascii() and currency.isalpha() and currency.isupper()):
            raise InvalidAccount(f"currency must be an ISO 4217 code, got {currency!r}")
        if flags == AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS:
            raise InvalidAccount("an account cannot be limited both ways")
        a = schema.accounts
        stmt = (
            pg_insert(a)
            .values(
                id=new_id(),
                code=code,
                currency=currency,
                kind=kind.value,
                flags=int(flags),
                metadata=dict(metadata or {}),
            )
            .on_conflict_do_nothing(index_elements=[a.c.code])
            .returning(*ACCOUNT_COLUMNS)
        )
        row = (await self._conn.execute(stmt)).first()
        if row is None:
            row = (await self._conn.execute(select(*ACCOUNT_COLUMNS).where(a.c.code == code))).one()
            if (row.currency, row.kind, row.flags) != (currency, kind.value, int(flags)):
                raise AccountConflict(code)
        return account(row)

    async def get_account(self, account_id: UUID) -> Account:
        """The account with this id; raises AccountNotFound."""
        a = schema.accounts
        row = (await self._conn.execute(select(*ACCOUNT_COLUMNS).where(a.c.id == account_id))).first()
        if row is None:
            raise AccountNotFound([account_id])
        return account(row)

    async def get_accounts_by_code(self, codes: Sequence[str]) -> dict[str, Account]:
        """The accounts among `codes` that exist, by code."""
        a = schema.accounts
        stmt = select(*ACCOUNT_COLUMNS).where(a.c.code == any_(array(list(codes), Text)))
        return {row.code: account(row) for row in await self._conn.execute(stmt)}

    async def list_accounts(
        self,
        *,
        after: UUID | None = None,
        limit: int = 50,
        code_prefix: str | None = None,
        currency: str | None = None,
        kind: AccountKind | str | None = None,
    ) -> AccountPage:
        """Accounts in id order (creation order), keyset-paginated by `after`."""
        a = schema.accounts
        stmt = select(*ACCOUNT_COLUMNS).order_by(a.c.id).limit(limit + 1)
        if after is not None:
            stmt = stmt.where(a.c.id > after)
        if code_prefix:
            stmt = stmt.where(a.c.code.startswith(code_prefix, autoescape=True))
        if currency is not None:
            stmt = stmt.where(a.c.currency == currency)
        if kind is not None:
            stmt = stmt.where(a.c.kind == AccountKind(kind).value)
        items = [account(row) for row in await self._conn.execute(stmt)]
        more = len(items) > limit
        items = items[:limit]
        return AccountPage(items, items[-1].id if more else None)
