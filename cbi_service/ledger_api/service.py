"""A programme's money in the ledger: its chart of accounts and the postings that move it (contract §3, §9).

Chart of accounts, created with the programme, all in its currency, codes `prog:{programme_id}:{name}`:

    donor_funds  equity     debited by every funding; never positive   (-balance = funded)
    available    liability  funded and not yet reserved; never negative
    committed    liability  reserved by approved batches, not yet issued; never negative
    disbursed    liability  issued to beneficiaries, not yet spent; never negative
    redeemed     liability  spent at merchants

Every posting moves money between these five accounts and balances to zero, so at all times
`-donor_funds = available + committed + disbursed + redeemed`, i.e. funded = available + committed +
disbursed (where `disbursed`, as §3 reports it, includes the redeemed part).

Reservations are plain transfers available -> committed, not two-phase pending transfers: a batch is
reserved as a whole on its last approval and then consumed entitlement by entitlement (issued, or
released when one fails or the batch is cancelled). A pending transfer is resolved once, in one piece;
the non-negative flag on `committed` gives the same guarantee here (nothing is issued that was not
reserved) without that restriction.

Ledger keys are deterministic: `prog:{programme}:{operation}:{subject}:{n}`, where n numbers the postings
of that operation for that subject (1, 2, ...: a re-reservation after a failed issue, successive partial
redemptions). Two concurrent units of work doing the same thing compute the same key and the ledger
posts it once; a unit of work that rolled back leaves no number used, so its retry gets the same key.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ARRAY, Text, any_, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from cbi_service.audit.service import record_audit
from cbi_service.auth.roles import Principal
from cbi_service.kit.errors import Conflict, NotFound, UnprocessableEntity
from cbi_service.kit.money import Money, require_currency
from cbi_service.ledger_api.schemas import (
    FundingCreate,
    FundingOut,
    LedgerAccountOut,
    LedgerEntryOut,
    ProgrammeBalancesOut,
    TrialBalanceOut,
)
from cbi_service.programmes.models import Programme
from cbi_service.programmes.repository import ProgrammeRepository
from ledger import (
    AccountFlags,
    AccountKind,
    AccountNotFound,
    EntrySpec,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidCursor,
    InvalidTransaction,
    Ledger,
    Transaction,
    TransactionSpec,
    schema,
)

NON_NEGATIVE = AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
NON_POSITIVE = AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS

#: name -> (kind, flags) of each account a programme gets.
CHART: dict[str, tuple[AccountKind, AccountFlags]] = {
    "donor_funds": (AccountKind.EQUITY, NON_POSITIVE),
    "available": (AccountKind.LIABILITY, NON_NEGATIVE),
    "committed": (AccountKind.LIABILITY, NON_NEGATIVE),
    "disbursed": (AccountKind.LIABILITY, NON_NEGATIVE),
    "redeemed": (AccountKind.LIABILITY, AccountFlags.NONE),
}

FUNDING = "funding"
RESERVATION = "reservation"
RELEASE = "release"
DISBURSEMENT = "disbursement"
REDEMPTION = "redemption"
RETURN = "return"


def account_code(programme_id: uuid.UUID, name: str) -> str:
    return f"prog:{programme_id}:{name}"


def programme_prefix(programme_id: uuid.UUID) -> str:
    """Prefix of the programme's account codes and ledger keys."""
    return f"prog:{programme_id}:"


@dataclass(frozen=True, slots=True)
class ProgrammeAccounts:
    donor_funds: uuid.UUID
    available: uuid.UUID
    committed: uuid.UUID
    disbursed: uuid.UUID
    redeemed: uuid.UUID


@dataclass(frozen=True, slots=True)
class ProgrammeBalances:
    """Minor units in `currency`; `disbursed` includes `redeemed` (contract §3)."""

    currency: str
    funded: int
    available: int
    committed: int
    disbursed: int
    redeemed: int
    returned: int


# Accounts never change once created, so their ids are remembered per programme.
_accounts_cache: dict[uuid.UUID, ProgrammeAccounts] = {}


async def _connection(session: AsyncSession) -> AsyncConnection:
    return await session.connection()


async def open_programme_accounts(session: AsyncSession, programme: Programme) -> None:
    """Create the programme's chart of accounts (idempotent: existing accounts are kept)."""
    ledger = Ledger(await _connection(session))
    ids = {}
    for name, (kind, flags) in CHART.items():
        account = await ledger.create_account(
            account_code(programme.id, name),
            programme.currency,
            kind,
            flags=flags,
            metadata={"programme_id": str(programme.id), "role": name},
        )
        ids[name] = account.id
    _accounts_cache[programme.id] = ProgrammeAccounts(**ids)


async def programme_accounts(session: AsyncSession, programme: Programme) -> ProgrammeAccounts:
    cached = _accounts_cache.get(programme.id)
    if cached is not None:
        return cached
    ledger = Ledger(await _connection(session))
    found = await ledger.get_accounts_by_code([account_code(programme.id, name) for name in CHART])
    if len(found) != len(CHART):
        # Programmes created before their chart existed (or by raw SQL) get it on first use.
        await open_programme_accounts(session, programme)
        return _accounts_cache[programme.id]
    accounts = ProgrammeAccounts(**{name: found[account_code(programme.id, name)].id for name in CHART})
    _accounts_cache[programme.id] = accounts
    return accounts


async def programme_balances(session: AsyncSession, programme: Programme) -> ProgrammeBalances:
    """The §3 balances, read from the ledger's counters (and, for `returned`, its return postings)."""
    accounts = await programme_accounts(session, programme)
    conn = await _connection(session)
    a = schema.accounts
    rows = await conn.execute(
        select(a.c.id, a.c.posted).where(
            a.c.id.in_(
                [accounts.donor_funds, accounts.available, accounts.committed, accounts.disbursed, accounts.redeemed]
            )
        )
    )
    posted = {row.id: int(row.posted) for row in rows}
    returned = await _returned(conn, programme.id, accounts.available)
    return ProgrammeBalances(
        currency=programme.currency,
        funded=-posted[accounts.donor_funds],
        available=posted[accounts.available],
        committed=posted[accounts.committed],
        disbursed=posted[accounts.disbursed] + posted[accounts.redeemed],
        redeemed=posted[accounts.redeemed],
        returned=returned,
    )


async def _returned(conn: AsyncConnection, programme_id: uuid.UUID, available: uuid.UUID) -> int:
    """Sum credited to `available` by the programme's return postings (found by their key range)."""
    t, e = schema.transactions, schema.entries
    low, high = _key_range(f"{programme_prefix(programme_id)}{RETURN}:")
    total = await conn.scalar(
        select(func.coalesce(func.sum(e.c.amount), 0))
        .select_from(t.join(e, e.c.tx_id == t.c.id))
        .where(t.c.key >= low, t.c.key < high, t.c.kind == RETURN, e.c.account_id == available)
    )
    return int(total or 0)


def _key_range(prefix: str) -> tuple[str, str]:
    """[low, high) bounds of the keys starting with `prefix` (keys compare bytewise: COLLATE "C")."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


async def _next_key(conn: AsyncConnection, prefix: str) -> str:
    low, high = _key_range(prefix)
    t = schema.transactions
    used = await conn.scalar(select(func.count()).select_from(t).where(t.c.key >= low, t.c.key < high))
    return f"{prefix}{int(used or 0) + 1}"


async def _move(
    session: AsyncSession,
    programme: Programme,
    operation: str,
    subject: str,
    source: str,
    target: str,
    amount: int,
    references: dict[str, str],
    description: str = "",
) -> Transaction:
    if amount <= 0:
        raise UnprocessableEntity(
            "Amount must be positive.", errors=[{"field": "amount", "message": "must be greater than zero"}]
        )
    accounts = await programme_accounts(session, programme)
    conn = await _connection(session)
    key = await _next_key(conn, f"{programme_prefix(programme.id)}{operation}:{subject}:")
    spec = TransactionSpec(
        key=key,
        entries=[EntrySpec(getattr(accounts, source), -amount), EntrySpec(getattr(accounts, target), amount)],
        kind=operation,
        references={"programme_id": str(programme.id), **references},
        description=description,
    )
    try:
        return await Ledger(conn).post(spec)
    except InsufficientFunds as exc:
        raise _insufficient(source) from exc
    except IdempotencyConflict as exc:
        # Another unit of work posted a different amount for the same subject at the same moment.
        raise Conflict("A concurrent posting for the same item was different; retry.") from exc
    except InvalidTransaction as exc:
        raise _invalid_amount(exc) from exc


def _invalid_amount(exc: InvalidTransaction) -> UnprocessableEntity:
    return UnprocessableEntity("Amount out of range.", errors=[{"field": "amount", "message": str(exc)}])


def _insufficient(account: str) -> Conflict:
    return Conflict(f"Not enough money in the programme's {account} balance for this operation.")


async def fund(
    session: AsyncSession,
    programme: Programme,
    amount: int,
    *,
    source: str,
    reference: str,
    request_key: str,
) -> Transaction:
    """Donor money into the programme: donor_funds -> available.

    `request_key` names the funding request (the caller and its Idempotency-Key): one request posts
    once, whatever happens to the HTTP exchange around it.
    """
    if amount <= 0:
        raise UnprocessableEntity(
            "Amount must be positive.", errors=[{"field": "amount", "message": "must be greater than zero"}]
        )
    accounts = await programme_accounts(session, programme)
    digest = hashlib.sha256(request_key.encode()).hexdigest()
    spec = TransactionSpec(
        key=f"{programme_prefix(programme.id)}{FUNDING}:{digest}",
        entries=[EntrySpec(accounts.donor_funds, -amount), EntrySpec(accounts.available, amount)],
        kind=FUNDING,
        references={"programme_id": str(programme.id), "source": source, "reference": reference},
        description=f"Funding from {source}",
    )
    try:
        return await Ledger(await _connection(session)).post(spec)
    except IdempotencyConflict as exc:
        raise Conflict("This funding request was already posted with different content.") from exc
    except InvalidTransaction as exc:
        raise _invalid_amount(exc) from exc


async def reserve(session: AsyncSession, programme: Programme, subject_id: uuid.UUID, amount_minor: int) -> Transaction:
    """Reserve money for an approved batch (or a retried entitlement): available -> committed."""
    return await _move(
        session,
        programme,
        RESERVATION,
        str(subject_id),
        "available",
        "committed",
        amount_minor,
        {"subject_id": str(subject_id)},
    )


async def release_reservation(
    session: AsyncSession, programme: Programme, subject_id: uuid.UUID, amount_minor: int
) -> Transaction:
    """Give back reserved money that will not be issued (batch rejected or cancelled, issue failed)."""
    return await _move(
        session,
        programme,
        RELEASE,
        str(subject_id),
        "committed",
        "available",
        amount_minor,
        {"subject_id": str(subject_id)},
    )


async def disburse(
    session: AsyncSession, programme: Programme, entitlement_id: uuid.UUID, amount_minor: int
) -> Transaction:
    """An entitlement was issued to its beneficiary: committed -> disbursed."""
    return await _move(
        session,
        programme,
        DISBURSEMENT,
        str(entitlement_id),
        "committed",
        "disbursed",
        amount_minor,
        {"entitlement_id": str(entitlement_id)},
    )


async def disburse_many(session: AsyncSession, items: Sequence[tuple[Programme, uuid.UUID, int]]) -> list[Transaction]:
    """`disburse` for many entitlements in one bulk posting (accounts locked once, rows written in bulk).

    Keys are numbered as `disburse` numbers them; an entitlement appearing twice in `items` is refused.
    """
    if not items:
        return []
    conn = await _connection(session)
    prefixes = [f"{programme_prefix(p.id)}{DISBURSEMENT}:{entitlement_id}:" for p, entitlement_id, _ in items]
    if len(set(prefixes)) != len(prefixes):
        raise UnprocessableEntity("An entitlement appears twice in one disbursement.")
    t = schema.transactions
    first_keys = [prefix + "1" for prefix in prefixes]
    keys = bindparam("keys", first_keys, type_=ARRAY(Text()))
    taken = set((await conn.execute(select(t.c.key).where(t.c.key == any_(keys)))).scalars())
    specs = []
    for (programme, entitlement_id, amount), prefix, first in zip(items, prefixes, first_keys, strict=True):
        if amount <= 0:
            raise UnprocessableEntity("Amount must be positive.")
        accounts = await programme_accounts(session, programme)
        key = first if first not in taken else await _next_key(conn, prefix)
        specs.append(
            TransactionSpec(
                key=key,
                entries=[EntrySpec(accounts.committed, -amount), EntrySpec(accounts.disbursed, amount)],
                kind=DISBURSEMENT,
                references={"programme_id": str(programme.id), "entitlement_id": str(entitlement_id)},
            )
        )
    try:
        return await Ledger(conn).post_many(specs)
    except InsufficientFunds as exc:
        raise _insufficient("committed") from exc


async def redeem(
    session: AsyncSession, programme: Programme, entitlement_id: uuid.UUID, amount_minor: int
) -> Transaction:
    """Money issued on an entitlement was spent at a merchant: disbursed -> redeemed."""
    return await _move(
        session,
        programme,
        REDEMPTION,
        str(entitlement_id),
        "disbursed",
        "redeemed",
        amount_minor,
        {"entitlement_id": str(entitlement_id)},
    )


async def return_to_budget(
    session: AsyncSession,
    programme: Programme,
    entitlement_id: uuid.UUID,
    amount: int,
    reason: str,
    *,
    from_committed: bool = False,
) -> Transaction:
    """Money comes back to the programme's budget (expired or cancelled voucher, provider reversal).

    By default the money had been issued (disbursed -> available); `from_committed` returns reserved
    money instead. Either way it counts in `returned`.
    """
    return await _move(
        session,
        programme,
        RETURN,
        str(entitlement_id),
        "committed" if from_committed else "disbursed",
        "available",
        amount,
        {"entitlement_id": str(entitlement_id), "reason": reason},
        description=f"Returned to budget: {reason}",
    )


# ------------------------------------------------------------------------------------------ API reads/writes


async def _programme(session: AsyncSession, programme_id: uuid.UUID) -> Programme:
    programme = await ProgrammeRepository(session).get(programme_id)
    if programme is None:
        raise NotFound("Programme not found.")
    return programme


def balances_out(programme_id: uuid.UUID, balances: ProgrammeBalances) -> ProgrammeBalancesOut:
    c = balances.currency
    return ProgrammeBalancesOut(
        programme_id=programme_id,
        funded=Money.of(balances.funded, c),
        available=Money.of(balances.available, c),
        committed=Money.of(balances.committed, c),
        disbursed=Money.of(balances.disbursed, c),
        redeemed=Money.of(balances.redeemed, c),
        returned=Money.of(balances.returned, c),
    )


async def get_programme_balances(session: AsyncSession, programme_id: uuid.UUID) -> ProgrammeBalancesOut:
    programme = await _programme(session, programme_id)
    return balances_out(programme.id, await programme_balances(session, programme))


async def fund_programme(
    session: AsyncSession, principal: Principal, programme_id: uuid.UUID, body: FundingCreate, request_key: str
) -> FundingOut:
    programme = await _programme(session, programme_id)
    amount = require_currency(body.amount, programme.currency)
    before = await programme_balances(session, programme)
    tx = await fund(
        session,
        programme,
        amount,
        source=body.source,
        reference=body.reference,
        request_key=f"{principal.id}:{request_key}",
    )
    after = await programme_balances(session, programme)
    out = FundingOut(
        transaction_id=tx.id,
        programme_id=programme.id,
        amount=Money.of(amount, programme.currency),
        source=body.source,
        reference=body.reference,
        posted_at=tx.posted_at,
        balances=balances_out(programme.id, after),
    )
    await record_audit(
        session,
        principal,
        "programme.funded",
        "programme",
        programme.id,
        {"funded": before.funded, "available": before.available},
        {
            "funded": after.funded,
            "available": after.available,
            "amount_minor": amount,
            "currency": programme.currency,
            "source": body.source,
            "reference": body.reference,
            "transaction_id": str(tx.id),
        },
    )
    return out


async def list_ledger_accounts(
    session: AsyncSession,
    *,
    after_id: uuid.UUID | None,
    limit: int,
    programme_id: uuid.UUID | None,
    currency: str | None,
) -> tuple[list[LedgerAccountOut], uuid.UUID | None]:
    ledger = Ledger(await _connection(session))
    page = await ledger.list_accounts(
        after=after_id,
        limit=limit,
        code_prefix=programme_prefix(programme_id) if programme_id else None,
        currency=currency,
    )
    balances = await ledger.balances([a.id for a in page.items])
    return [LedgerAccountOut.of(a, balances[a.id]) for a in page.items], page.next_after


async def account_entries(
    session: AsyncSession, account_id: uuid.UUID, *, cursor: str | None, limit: int
) -> tuple[list[LedgerEntryOut], str | None]:
    ledger = Ledger(await _connection(session))
    try:
        await ledger.get_account(account_id)
    except AccountNotFound as exc:
        raise NotFound("Ledger account not found.") from exc
    try:
        page = await ledger.entries(account_id, cursor=cursor, limit=limit)
    except InvalidCursor as exc:
        raise UnprocessableEntity(
            "Invalid cursor.", errors=[{"field": "cursor", "message": "not a valid cursor"}]
        ) from exc
    return [LedgerEntryOut.of(e) for e in page.items], page.next_cursor


async def trial_balance(
    session: AsyncSession, *, as_of: datetime | None, programme_id: uuid.UUID | None
) -> TrialBalanceOut:
    ledger = Ledger(await _connection(session))
    prefix = programme_prefix(programme_id) if programme_id else None
    return TrialBalanceOut.of(await ledger.trial_balance(as_of, code_prefix=prefix))
