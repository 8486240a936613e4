"""A programme's money in the ledger: its chart of accounts and the postings that move it (contract §3, §9).

Chart of accounts, opened when the programme is created (`open_programme_accounts`, same unit of work), all
in its currency, codes `prog:{programme_id}:{name}`:

    donor_funds  equity     debited by every funding; never positive   (-balance = funded)
    available    liability  funded and not yet reserved; never negative
    committed    liability  reserved by approved batches, not yet issued; never negative
    disbursed    liability  issued to beneficiaries, not yet spent; never negative
    redeemed     liability  spent at merchants

and one more per merchant serving the programme (`open_merchant_accounts`, when the merchant is created):

    payable:{merchant_id}  liability  redeemed at that merchant, not yet paid to it; never negative

and, from the first merchant settlement paid (`pay_merchant`):

    bank                   liability  redeemed at merchants and paid to them from the agency's bank

A provider-run voucher's redemption moves money disbursed -> redeemed; a paper voucher's, at a merchant the
agency pays itself, disbursed -> that merchant's payable, and its settlement payable -> bank. Every posting
moves money between the programme's accounts and balances to zero, so at all times `-donor_funds = available +
committed + disbursed + redeemed + Σ payable + bank`, i.e. funded = available + committed + disbursed, where
`disbursed` as §3 reports it includes `redeemed`, and `redeemed` is the redeemed account plus the payables
and the bank account (a voucher spent is redeemed whether or not its merchant has been paid yet). The
balances are read in one statement
(one snapshot), so the identity holds in every read, whatever commits meanwhile.

Reservations are plain transfers available -> committed, not two-phase pending transfers: a batch is
reserved as a whole on its last approval and then consumed entitlement by entitlement (issued, or
released when one fails or the batch is cancelled). A pending transfer is resolved once, in one piece;
the non-negative flag on `committed` gives the same guarantee here (nothing is issued that was not
reserved) without that restriction.

Ledger keys name the business event a posting records: `prog:{programme}:{operation}:{subject}:{event}`,
where the caller supplies `event` from facts it holds under the subject's row lock (see
`cbi_service.accounting.postings`: `approved`, `cancelled`, `failure-2`, `after-3000000`...); issues
are `disbursement:{entitlement}:issued` (an entitlement is issued once), returns
`return:{entitlement}:{reason}` (expiry and cancellation end an entitlement). Two units of work recording
different events therefore never share a key, and one event can only ever be posted once. The state
machines never record an event twice, so when the ledger answers that a key is already posted
(`replayed`), the caller's state and the ledger disagree: that is refused with `LedgerOutOfStep` (the unit
of work rolls back) rather than taken as success. Funding keys are the funding request's, and a replay is
that request retried.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.accounting.schemas import LedgerAccountOut, LedgerEntryOut, TrialBalanceOut
from cbi_service.kit.errors import Conflict, NotFound, UnprocessableEntity
from cbi_service.kit.pagination import bad_cursor
from ledger import (
    AccountFlags,
    AccountKind,
    AccountNotFound,
    AmountOutOfRange,
    EntrySpec,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidCursor,
    InvalidTransaction,
    Ledger,
    Transaction,
    TransactionSpec,
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
PAYABLE = "payable"
SETTLEMENT = "settlement"
BANK = "bank"

#: The event of a disbursement: an entitlement is issued at most once.
ISSUED = "issued"


class ProgrammeRef(Protocol):
    """What accounting needs of a programme: its id (in every account code and ledger key) and its currency.
    Callers pass the programme they looked up; accounting never reads the programmes table itself."""

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def currency(self) -> str: ...


class LedgerOutOfStep(RuntimeError):
    """The ledger already holds the posting of this business event (or another posting under its key):
    the caller's state and the ledger disagree, which needs a person, not a retry."""


class MissingChart(RuntimeError):
    """A programme without its chart of accounts: programmes get it when created, so this is a fault."""


def account_code(programme_id: uuid.UUID, name: str) -> str:
    return f"prog:{programme_id}:{name}"


def payable_code(programme_id: uuid.UUID, merchant_id: uuid.UUID) -> str:
    """The account of what the programme owes a merchant for the vouchers redeemed there."""
    return account_code(programme_id, f"{PAYABLE}:{merchant_id}")


def programme_prefix(programme_id: uuid.UUID) -> str:
    """Prefix of the programme's account codes and ledger keys."""
    return f"prog:{programme_id}:"


def posting_key(programme_id: uuid.UUID, operation: str, subject: uuid.UUID, event: str) -> str:
    if not event:
        raise ValueError("a posting needs the event it records")
    return f"{programme_prefix(programme_id)}{operation}:{subject}:{event}"


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


async def _ledger(session: AsyncSession) -> Ledger:
    return Ledger(await session.connection())


async def open_programme_accounts(session: AsyncSession, programme: ProgrammeRef) -> None:
    """Create the programme's chart of accounts (idempotent: existing accounts are kept)."""
    ledger = await _ledger(session)
    for name, (kind, flags) in CHART.items():
        await ledger.create_account(
            account_code(programme.id, name),
            programme.currency,
            kind,
            flags=flags,
            metadata={"programme_id": str(programme.id), "role": name},
        )


async def programme_accounts(session: AsyncSession, programme: ProgrammeRef) -> ProgrammeAccounts:
    """The chart's account ids, read (never created) in the caller's transaction."""
    codes = {name: account_code(programme.id, name) for name in CHART}
    found = await (await _ledger(session)).get_accounts_by_code(list(codes.values()))
    missing = sorted(name for name, code in codes.items() if code not in found)
    if missing:
        raise MissingChart(f"programme {programme.id} has no ledger account(s) {', '.join(missing)}")
    return ProgrammeAccounts(**{name: found[code].id for name, code in codes.items()})


async def programme_balances(session: AsyncSession, programme: ProgrammeRef) -> ProgrammeBalances:
    """The §3 balances: every account of the programme read in one statement (so the identity holds in any
    read, whatever commits meanwhile), and `returned` from its return postings."""
    ledger = await _ledger(session)
    prefix = programme_prefix(programme.id)
    found = await ledger.balances_by_code_prefix(prefix)
    missing = sorted(name for name in CHART if account_code(programme.id, name) not in found)
    if missing:
        raise MissingChart(f"programme {programme.id} has no ledger account(s) {', '.join(missing)}")
    chart = {name: found[account_code(programme.id, name)].posted for name in CHART}
    payables = sum(balance.posted for code, balance in found.items() if code.startswith(f"{prefix}{PAYABLE}:"))
    bank = found.get(account_code(programme.id, BANK))
    available = found[account_code(programme.id, "available")].account_id
    returned = await ledger.sum_posted(available, key_prefix=f"{prefix}{RETURN}:", kind=RETURN)
    redeemed = chart["redeemed"] + payables + (bank.posted if bank is not None else 0)
    return ProgrammeBalances(
        currency=programme.currency,
        funded=-chart["donor_funds"],
        available=chart["available"],
        committed=chart["committed"],
        disbursed=chart["disbursed"] + redeemed,
        redeemed=redeemed,
        returned=returned,
    )


async def open_merchant_accounts(
    session: AsyncSession, programmes: Sequence[ProgrammeRef], merchant_id: uuid.UUID
) -> None:
    """A payable account in each programme the merchant serves (idempotent)."""
    ledger = await _ledger(session)
    for programme in programmes:
        await ledger.create_account(
            payable_code(programme.id, merchant_id),
            programme.currency,
            AccountKind.LIABILITY,
            flags=NON_NEGATIVE,
            metadata={"programme_id": str(programme.id), "merchant_id": str(merchant_id), "role": PAYABLE},
        )


async def merchant_payable(session: AsyncSession, programmes: Sequence[ProgrammeRef], merchant_id: uuid.UUID) -> int:
    """What the programmes owe the merchant: the sum of its payable accounts."""
    ledger = await _ledger(session)
    found = await ledger.get_accounts_by_code([payable_code(p.id, merchant_id) for p in programmes])
    balances = await ledger.balances([account.id for account in found.values()])
    return sum(balance.posted for balance in balances.values())


@dataclass(frozen=True, slots=True)
class MerchantPayment:
    """What one programme pays a merchant in a settlement."""

    programme: ProgrammeRef
    amount: int


async def pay_merchant(
    session: AsyncSession,
    payments: Sequence[MerchantPayment],
    merchant_id: uuid.UUID,
    settlement_id: uuid.UUID,
    bank_reference: str,
) -> list[Transaction]:
    """A settlement paid: each programme's payable to the merchant -> its bank account, keyed
    `settlement:{settlement}:paid` (a settlement is paid once). The bank account opens with the first."""
    ledger = await _ledger(session)
    specs = []
    for payment in payments:
        programme = payment.programme
        bank = await ledger.create_account(
            account_code(programme.id, BANK),
            programme.currency,
            AccountKind.LIABILITY,
            flags=NON_NEGATIVE,
            metadata={"programme_id": str(programme.id), "role": BANK},
        )
        found = await ledger.get_accounts_by_code([payable_code(programme.id, merchant_id)])
        payable = found.get(payable_code(programme.id, merchant_id))
        if payable is None:
            raise MissingChart(f"no ledger account {payable_code(programme.id, merchant_id)}")
        specs.append(
            TransactionSpec(
                key=posting_key(programme.id, SETTLEMENT, settlement_id, "paid"),
                entries=[EntrySpec(payable.id, -payment.amount), EntrySpec(bank.id, payment.amount)],
                kind=SETTLEMENT,
                references={
                    "programme_id": str(programme.id),
                    "merchant_id": str(merchant_id),
                    "settlement_id": str(settlement_id),
                    "bank_reference": bank_reference,
                },
            )
        )
    try:
        return [_fresh(tx) for tx in await ledger.post_many(specs)]
    except InsufficientFunds as exc:
        raise LedgerOutOfStep("a settlement pays more than the merchant's payable account holds") from exc
    except IdempotencyConflict as exc:
        raise LedgerOutOfStep(f"ledger transaction {exc.key!r} was already posted with other content") from exc


@dataclass(frozen=True, slots=True)
class MerchantRedemption:
    """One voucher redemption at a merchant: `redemption_id` names the event (a redemption happens once)."""

    programme: ProgrammeRef
    entitlement_id: uuid.UUID
    merchant_id: uuid.UUID
    redemption_id: uuid.UUID
    amount: int


async def redeem_at_merchants(session: AsyncSession, items: Sequence[MerchantRedemption]) -> list[Transaction]:
    """Vouchers spent at merchants the agency pays: disbursed -> each merchant's payable, in one bulk posting
    (accounts looked up and locked once), keyed `redemption:{entitlement}:at-{redemption}`."""
    if not items:
        return []
    codes = {account_code(i.programme.id, "disbursed") for i in items}
    codes |= {payable_code(i.programme.id, i.merchant_id) for i in items}
    found = await (await _ledger(session)).get_accounts_by_code(sorted(codes))
    missing = sorted(codes - set(found))
    if missing:
        raise MissingChart(f"no ledger account(s) {', '.join(missing)}")
    specs = []
    for item in items:
        if item.amount <= 0:
            raise UnprocessableEntity("Amount must be positive.")
        disbursed = found[account_code(item.programme.id, "disbursed")].id
        payable = found[payable_code(item.programme.id, item.merchant_id)].id
        specs.append(
            TransactionSpec(
                key=posting_key(item.programme.id, REDEMPTION, item.entitlement_id, f"at-{item.redemption_id}"),
                entries=[EntrySpec(disbursed, -item.amount), EntrySpec(payable, item.amount)],
                kind=REDEMPTION,
                references={
                    "programme_id": str(item.programme.id),
                    "entitlement_id": str(item.entitlement_id),
                    "merchant_id": str(item.merchant_id),
                    "redemption_id": str(item.redemption_id),
                },
            )
        )
    try:
        return [_fresh(tx) for tx in await (await _ledger(session)).post_many(specs)]
    except InsufficientFunds as exc:
        raise _insufficient("disbursed") from exc
    except IdempotencyConflict as exc:
        raise LedgerOutOfStep(f"ledger transaction {exc.key!r} was already posted with other content") from exc


def _fresh(tx: Transaction) -> Transaction:
    if tx.replayed:
        raise LedgerOutOfStep(f"ledger transaction {tx.key!r} was already posted")
    return tx


async def _move(
    session: AsyncSession,
    programme: ProgrammeRef,
    operation: str,
    subject: uuid.UUID,
    event: str,
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
    spec = TransactionSpec(
        key=posting_key(programme.id, operation, subject, event),
        entries=[EntrySpec(getattr(accounts, source), -amount), EntrySpec(getattr(accounts, target), amount)],
        kind=operation,
        references={"programme_id": str(programme.id), **references},
        description=description,
    )
    try:
        return _fresh(await (await _ledger(session)).post(spec))
    except InsufficientFunds as exc:
        raise _insufficient(source) from exc
    except IdempotencyConflict as exc:
        raise LedgerOutOfStep(f"ledger transaction {spec.key!r} was already posted with other content") from exc
    except AmountOutOfRange as exc:
        raise _out_of_range(exc) from exc


def _out_of_range(exc: AmountOutOfRange) -> UnprocessableEntity:
    return UnprocessableEntity("Amount out of range.", errors=[{"field": "amount", "message": str(exc)}])


class InsufficientBalance(Conflict):
    """A posting the programme's balance cannot cover (its account's no-negative flag refused it)."""


def _insufficient(account: str) -> InsufficientBalance:
    return InsufficientBalance(f"Not enough money in the programme's {account} balance for this operation.")


async def fund(
    session: AsyncSession,
    programme: ProgrammeRef,
    amount: int,
    *,
    source: str,
    reference: str,
    request_key: str,
    accounts: ProgrammeAccounts | None = None,
) -> Transaction:
    """Donor money into the programme: donor_funds -> available.

    `request_key` names the funding request (the caller and its Idempotency-Key): one request posts
    once, whatever happens to the HTTP exchange around it, so here a replay is the expected answer.
    """
    if amount <= 0:
        raise UnprocessableEntity(
            "Amount must be positive.", errors=[{"field": "amount", "message": "must be greater than zero"}]
        )
    accounts = accounts or await programme_accounts(session, programme)
    digest = hashlib.sha256(request_key.encode()).hexdigest()
    spec = TransactionSpec(
        key=f"{programme_prefix(programme.id)}{FUNDING}:{digest}",
        entries=[EntrySpec(accounts.donor_funds, -amount), EntrySpec(accounts.available, amount)],
        kind=FUNDING,
        references={"programme_id": str(programme.id), "source": source, "reference": reference},
        description=f"Funding from {source}",
    )
    try:
        return await (await _ledger(session)).post(spec)
    except IdempotencyConflict as exc:
        raise Conflict("This funding request was already posted with different content.") from exc
    except AmountOutOfRange as exc:
        raise _out_of_range(exc) from exc
    except InvalidTransaction as exc:
        # Everything in this posting but the chart comes from the client: what the ledger refuses is theirs.
        raise UnprocessableEntity(
            "The ledger cannot record this funding.",
            errors=[{"field": "body", "message": "source and reference must be plain text the ledger can store"}],
        ) from exc


async def reserve(
    session: AsyncSession, programme: ProgrammeRef, subject_id: uuid.UUID, amount_minor: int, *, event: str
) -> Transaction:
    """Reserve money for an approved batch (or a retried entitlement): available -> committed."""
    return await _move(
        session,
        programme,
        RESERVATION,
        subject_id,
        event,
        "available",
        "committed",
        amount_minor,
        {"subject_id": str(subject_id)},
    )


async def release_reservation(
    session: AsyncSession, programme: ProgrammeRef, subject_id: uuid.UUID, amount_minor: int, *, event: str
) -> Transaction:
    """Give back reserved money that will not be issued (batch cancelled, entitlement failed or cancelled)."""
    return await _move(
        session,
        programme,
        RELEASE,
        subject_id,
        event,
        "committed",
        "available",
        amount_minor,
        {"subject_id": str(subject_id)},
    )


async def disburse(
    session: AsyncSession, programme: ProgrammeRef, entitlement_id: uuid.UUID, amount_minor: int
) -> Transaction:
    """An entitlement was issued to its beneficiary: committed -> disbursed."""
    return await _move(
        session,
        programme,
        DISBURSEMENT,
        entitlement_id,
        ISSUED,
        "committed",
        "disbursed",
        amount_minor,
        {"entitlement_id": str(entitlement_id)},
    )


async def disburse_many(
    session: AsyncSession, items: Sequence[tuple[ProgrammeRef, uuid.UUID, int]]
) -> list[Transaction]:
    """`disburse` for many entitlements in one bulk posting (accounts locked once, rows written in bulk)."""
    if not items:
        return []
    if len({entitlement_id for _, entitlement_id, _ in items}) != len(items):
        raise ValueError("an entitlement appears twice in one disbursement")
    charts: dict[uuid.UUID, ProgrammeAccounts] = {}
    specs = []
    for programme, entitlement_id, amount in items:
        if amount <= 0:
            raise UnprocessableEntity("Amount must be positive.")
        accounts = charts.get(programme.id)
        if accounts is None:
            accounts = charts[programme.id] = await programme_accounts(session, programme)
        specs.append(
            TransactionSpec(
                key=posting_key(programme.id, DISBURSEMENT, entitlement_id, ISSUED),
                entries=[EntrySpec(accounts.committed, -amount), EntrySpec(accounts.disbursed, amount)],
                kind=DISBURSEMENT,
                references={"programme_id": str(programme.id), "entitlement_id": str(entitlement_id)},
            )
        )
    try:
        return [_fresh(tx) for tx in await (await _ledger(session)).post_many(specs)]
    except InsufficientFunds as exc:
        raise _insufficient("committed") from exc
    except IdempotencyConflict as exc:
        raise LedgerOutOfStep(f"ledger transaction {exc.key!r} was already posted with other content") from exc


async def redeem(
    session: AsyncSession, programme: ProgrammeRef, entitlement_id: uuid.UUID, amount_minor: int, *, event: str
) -> Transaction:
    """Money issued on an entitlement was spent at a merchant: disbursed -> redeemed."""
    return await _move(
        session,
        programme,
        REDEMPTION,
        entitlement_id,
        event,
        "disbursed",
        "redeemed",
        amount_minor,
        {"entitlement_id": str(entitlement_id)},
    )


async def return_to_budget(
    session: AsyncSession, programme: ProgrammeRef, entitlement_id: uuid.UUID, amount: int, reason: str
) -> Transaction:
    """Issued money comes back to the budget (expired or cancelled voucher): disbursed -> available.

    Counted in `returned`; reserved money that is never issued goes back by `release_reservation`
    instead, which §3 does not count as returned. An entitlement ends with its expiry or cancellation, so
    `reason` names the event.
    """
    return await _move(
        session,
        programme,
        RETURN,
        entitlement_id,
        reason,
        "disbursed",
        "available",
        amount,
        {"entitlement_id": str(entitlement_id), "reason": reason},
        description=f"Returned to budget: {reason}",
    )


# ------------------------------------------------------------------------------------------ ledger reads


async def list_ledger_accounts(
    session: AsyncSession,
    *,
    after_id: uuid.UUID | None,
    limit: int,
    programme_id: uuid.UUID | None,
    currency: str | None,
) -> tuple[list[LedgerAccountOut], uuid.UUID | None]:
    ledger = await _ledger(session)
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
    ledger = await _ledger(session)
    try:
        await ledger.get_account(account_id)
    except AccountNotFound as exc:
        raise NotFound("Ledger account not found.") from exc
    try:
        page = await ledger.entries(account_id, cursor=cursor, limit=limit)
    except InvalidCursor as exc:
        raise bad_cursor() from exc
    return [LedgerEntryOut.of(e) for e in page.items], page.next_cursor


async def trial_balance(
    session: AsyncSession, *, as_of: datetime | None, programme_id: uuid.UUID | None
) -> TrialBalanceOut:
    ledger = await _ledger(session)
    prefix = programme_prefix(programme_id) if programme_id else None
    return TrialBalanceOut.of(await ledger.trial_balance(as_of, code_prefix=prefix))
