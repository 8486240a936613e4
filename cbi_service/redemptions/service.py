"""Vouchers redeemed at merchants: online, a request each (carried out in groups of those that arrive
together, `online_redemptions`), and offline, a device's scans synced in bulk.

Both go through the entitlements state machine (`spend_vouchers`), which locks the vouchers' rows: two
merchants redeeming one voucher at once take turns, and the second finds what the first spent. Online, a
redemption the voucher cannot cover is refused (409, or 422 for more than remains); offline, the goods have
already changed hands, so every scan is recorded: `accepted`, a `conflict` kept for review when its voucher was
spent (or had run out) before it synced, or `rejected` when its token does not hold (bad signature, expired at
scan time, another programme). The scans of one sync are applied in scan order, so of two scans of one voucher
the earliest wins; a scan synced before is `replayed`, never applied again.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cbi_service.audit.service import record_audit
from cbi_service.auth.roles import Principal
from cbi_service.entitlements import service as entitlements
from cbi_service.entitlements.service import LockedVoucher, Spend, Spent, VoucherRef
from cbi_service.kit.errors import AppError, Conflict, NotFound, UnprocessableEntity
from cbi_service.kit.group_commit import GroupCommit
from cbi_service.kit.idempotency import Answer, KeyedRequest, run_many
from cbi_service.kit.ids import new_id
from cbi_service.kit.money import Money, require_currency
from cbi_service.kit.settings import Settings
from cbi_service.kit.signing import SigningKeys
from cbi_service.merchants import service as merchants
from cbi_service.merchants.service import MerchantRef
from cbi_service.redemptions.models import VoucherRedemption
from cbi_service.redemptions.repository import OnlineRecord, RedemptionRepository, Scan
from cbi_service.redemptions.schemas import (
    RedemptionCreate,
    RedemptionOut,
    RedemptionRecord,
    SyncItem,
    SyncOutcome,
    SyncRequest,
    SyncResult,
)
from cbi_service.vouchers.codes import normalize_code
from cbi_service.vouchers.keys import voucher_keys
from cbi_service.vouchers.tokens import InvalidVoucherToken, PresentedToken, VoucherClaims, read_token, trusted

CLOCK_SKEW = timedelta(minutes=5)
"""How far ahead of the service's clock a device's may run before its scans are refused as from the future."""
_CONFLICT_DETAIL = {
    "fully_redeemed": "The voucher is already fully redeemed.",
    "expired": "The voucher has expired.",
    "cancelled": "The voucher was cancelled.",
    "not_issued": "The voucher has not been issued.",
}


@dataclass(frozen=True)
class OnlineRedemption:
    """One `POST /v1/voucher-redemptions` as its request read it, to be carried out in a group commit."""

    principal: Principal
    key: str
    """Its Idempotency-Key."""
    request_hash: str
    body: RedemptionCreate
    request_id: str | None
    received_at: datetime


ONLINE_WRITERS = 1
"""Groups of online redemptions carried out at once in an API process. One: a group's fixed costs (a pooled
connection, its statements, the commit and its WAL flush) are paid per group, and with one writer the
redemptions that arrive meanwhile make the next group bigger instead of starting more small ones that would
queue on the programme's `disbursed` account anyway. Measured in B7 on 2 cores and 2 API processes: 1 writer
answers about 1.25 times the redemptions of 2 and 1.5 times those of 4, at a lower p99."""


def online_redemptions(
    sessions: async_sessionmaker[AsyncSession], settings: Settings
) -> GroupCommit[OnlineRedemption, Answer]:
    """The API process's writer of online redemptions: the concurrent ones are carried out together.

    Every redemption of a programme moves money out of its one `disbursed` ledger account, locked until the
    transaction commits, so redemptions a transaction each take turns on it; in groups they share that lock,
    the statements and the commit, and each still gets the answer it would have had alone."""

    async def carry_out(session: AsyncSession, group: Sequence[OnlineRedemption]) -> list[Answer]:
        return await redeem_many(session, settings, group)

    return GroupCommit(sessions, carry_out, writers=ONLINE_WRITERS)


async def redeem_many(session: AsyncSession, settings: Settings, group: Sequence[OnlineRedemption]) -> list[Answer]:
    """Redeem each request's `amount` of its voucher at its caller's merchant, in the order they came: of two
    redeeming the last of one voucher in a group, the first wins (between groups, the voucher's row lock
    decides). Each request is refused, stored and replayed under its Idempotency-Key as it would be alone
    (`kit.idempotency.run_many`)."""
    keyed = [KeyedRequest(r.principal.id, r.key, r.request_hash) for r in group]
    deferred = entitlements.DeferredPostings()

    async def effect(positions: Sequence[int]) -> list[RedemptionOut | AppError]:
        return await _redeem(session, settings, [group[n] for n in positions], deferred)

    answers = await run_many(session, keyed, effect, status_code=201, ttl_hours=settings.idempotency_ttl_hours)
    # The ledger last: its programme-wide `disbursed` account stays locked from here until the commit.
    await deferred.post(session)
    return answers


async def _redeem(
    session: AsyncSession,
    settings: Settings,
    group: Sequence[OnlineRedemption],
    deferred: entitlements.DeferredPostings,
) -> list[RedemptionOut | AppError]:
    """The redemptions of a group, each with its result or its refusal; a refused one writes nothing (the
    ledger postings of those applied wait in `deferred`)."""
    shops = await merchants.merchant_refs(session, (_merchant_id(r.principal) for r in group))
    named = [_named(r.body) for r in group]
    # The vouchers named, by id or by code, locked in one statement before anything refers to them (see
    # `lock_vouchers`), then spent in the order the requests came and recorded: only the spends applied, so a
    # refusal leaves nothing behind.
    locked = await entitlements.lock_vouchers(
        session,
        (n.claims.voucher_id for n in named if isinstance(n, PresentedToken)),
        (n for n in named if isinstance(n, str)),
    )
    by_code = {row.voucher_code: row for row in locked.values() if row.signed}
    keys = voucher_keys(settings)
    outcomes: list[AppError | Spend] = []
    for request, name in zip(group, named, strict=True):
        voucher = _voucher(keys, name, locked, by_code)
        merchant = shops[_merchant_id(request.principal)]
        if isinstance(voucher, AppError):
            outcomes.append(voucher)
        elif voucher.programme_id not in merchant.programme_ids:
            outcomes.append(Conflict("This merchant does not serve the voucher's programme."))
        else:
            try:
                amount = require_currency(request.body.amount, voucher.currency)
            except AppError as exc:
                outcomes.append(exc)
                continue
            by, at = request.principal, request.received_at
            outcomes.append(Spend(voucher.id, amount, merchant.id, new_id(), at, by, request.request_id))
    spends = [o for o in outcomes if isinstance(o, Spend)]
    applied = await entitlements.spend_vouchers(session, spends, locked=locked, deferred=deferred)
    spent = {s.spend.redemption_id: s for s in applied}
    records = [
        OnlineRecord(s.redemption_id, s.merchant_id, s.voucher_id, locked[s.voucher_id].currency, s.amount_minor, s.at)
        for s in spends
        if spent[s.redemption_id].applied
    ]
    await RedemptionRepository(session).record_online(records)
    return [_answer(spent[o.redemption_id], locked) if isinstance(o, Spend) else o for o in outcomes]


def _named(body: RedemptionCreate) -> PresentedToken | str | AppError:
    """The voucher as the request names it: its token read (not yet verified) or its code checked; a token that
    cannot be read or a mistyped code is a 422."""
    if body.token is not None:
        try:
            return read_token(body.token)
        except InvalidVoucherToken as exc:
            return _bad_token(exc)
    try:
        return normalize_code(body.code or "")
    except ValueError as exc:
        return UnprocessableEntity("Not a voucher code.", errors=[{"field": "code", "message": str(exc)}])


def _voucher(
    keys: SigningKeys,
    name: PresentedToken | str | AppError,
    locked: entitlements.VoucherLocks,
    by_code: dict[str | None, LockedVoucher],
) -> LockedVoucher | AppError:
    """The signed voucher the request names, or why not: a token that does not verify is a 422, a voucher that
    is not there a 404."""
    if isinstance(name, AppError):
        return name
    voucher = by_code.get(name) if isinstance(name, str) else locked.get(name.claims.voucher_id)
    if isinstance(name, PresentedToken):
        try:
            trusted(keys, name, voucher.voucher_token if voucher else None)
        except InvalidVoucherToken as exc:
            return _bad_token(exc)
    if voucher is None or not voucher.signed:
        return NotFound("Voucher not found.")
    return voucher


def _answer(spent: Spent, locked: entitlements.VoucherLocks) -> RedemptionOut | AppError:
    spend = spent.spend
    voucher = locked.get(spend.voucher_id)
    if spent.refusal == "unknown" or voucher is None:
        return NotFound("Voucher not found.")
    if spent.refusal == "exceeds_remaining":
        remaining = Money.of(spent.remaining_minor, voucher.currency).amount
        return UnprocessableEntity(
            "The voucher holds less than this amount.",
            errors=[{"field": "amount", "message": f"more than the {remaining} {voucher.currency} left"}],
        )
    if spent.refusal is not None:
        return Conflict(_CONFLICT_DETAIL[spent.refusal], extra={"reason": spent.refusal})
    return RedemptionOut(
        id=spend.redemption_id,
        voucher_id=spend.voucher_id,
        amount=Money.of(spend.amount_minor, voucher.currency),
        remaining=Money.of(spent.remaining_minor, voucher.currency),
    )


def _merchant_id(principal: Principal) -> uuid.UUID:
    if principal.merchant_id is None:
        raise RuntimeError("a merchant route reached without a merchant's key")
    return principal.merchant_id


async def _merchant_of(session: AsyncSession, principal: Principal) -> MerchantRef:
    return await merchants.merchant_ref(session, _merchant_id(principal))


def _bad_token(exc: InvalidVoucherToken) -> UnprocessableEntity:
    return UnprocessableEntity("The voucher's token does not verify.", errors=[{"field": "token", "message": str(exc)}])


async def sync(session: AsyncSession, settings: Settings, principal: Principal, body: SyncRequest) -> SyncResult:
    """Record a device's offline scans, one outcome each, in a few statements however many there are."""
    merchant = await _merchant_of(session, principal)
    now = datetime.now(UTC)
    keys = voucher_keys(settings)
    presented = [_read(item.token) for item in body.items]
    known = await entitlements.signed_vouchers(session, sorted({p.claims.voucher_id for p in presented if p}))
    claims = [_trusted(keys, p, known) if p is not None else None for p in presented]
    scans = [_judged(item, claim, known, merchant, now) for item, claim in zip(body.items, claims, strict=True)]
    # Every voucher a scan names is locked before the scans, which refer to it, are written (see
    # `lock_vouchers`): two shops' devices syncing scans of the same vouchers take turns, never deadlock.
    locked = await entitlements.lock_vouchers(session, (s.voucher_id for s in scans if s.voucher_id))
    repo = RedemptionRepository(session)
    fresh = await repo.insert_scans(merchant.id, body.device_id, scans)
    spendable = [s for s in scans if s.local_id in fresh and s.status == "accepted"]
    spendable.sort(key=lambda s: (s.scanned_at, s.local_id))
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    spends = [
        Spend(s.voucher_id, s.amount_minor, merchant.id, s.id, s.scanned_at, principal, request_id)
        for s in spendable
        if s.voucher_id
    ]
    spent = await entitlements.spend_vouchers(session, spends, locked=locked)
    await repo.mark_conflicts({s.spend.redemption_id: s.refusal for s in spent if s.refusal is not None})
    earlier = {
        row.local_id: row
        for row in await repo.synced(
            merchant.id, body.device_id, [s.local_id for s in scans if s.local_id not in fresh]
        )
    }
    outcomes = _outcomes(scans, fresh, {s.spend.redemption_id: s for s in spent}, earlier)
    counts = Counter(outcome.outcome for outcome in outcomes)
    result = SyncResult(
        device_id=body.device_id,
        counts={name: counts.get(name, 0) for name in ("accepted", "replayed", "conflict", "rejected")},
        items=outcomes,
    )
    summary: dict[str, Any] = {"device_id": body.device_id, "items": len(outcomes)}
    summary.update({str(name): count for name, count in result.counts.items()})
    await record_audit(session, principal, "voucher_redemptions.synced", "merchant", merchant.id, None, summary)
    return result


def _read(token: str) -> PresentedToken | None:
    try:
        return read_token(token)
    except InvalidVoucherToken:
        return None


def _trusted(keys: SigningKeys, token: PresentedToken, known: dict[uuid.UUID, VoucherRef]) -> VoucherClaims | None:
    """The token's claims if it holds; a token identical to the one its voucher was issued with holds without
    an Ed25519 check (`vouchers.tokens.trusted`)."""
    found = known.get(token.claims.voucher_id)
    try:
        return trusted(keys, token, found.token if found else None)
    except InvalidVoucherToken:
        return None


def _judged(
    item: SyncItem,
    claim: VoucherClaims | None,
    known: dict[uuid.UUID, VoucherRef],
    merchant: MerchantRef,
    now: datetime,
) -> Scan:
    """The scan as first recorded: what its token alone decides."""
    reason: str | None = None
    amount = item.amount.minor
    if claim is None:
        reason = "bad_signature"
    elif claim.voucher_id not in known:
        reason = "unknown_voucher"
    elif item.scanned_at > now + CLOCK_SKEW:
        reason = "scanned_in_future"
    elif item.scanned_at >= claim.expires_at:
        reason = "expired_at_scan"
    elif claim.programme_id not in merchant.programme_ids:
        reason = "wrong_programme"
    elif item.amount.currency != claim.currency:
        reason = "wrong_currency"
    elif amount > claim.amount_minor:
        reason = "exceeds_value"
    voucher_id = claim.voucher_id if claim is not None and claim.voucher_id in known else None
    return Scan(
        id=new_id(),
        local_id=item.local_id,
        voucher_id=voucher_id,
        currency=item.amount.currency,
        amount_minor=amount,
        status="accepted" if reason is None else "rejected",
        scanned_at=item.scanned_at,
        reason=reason,
    )


def _outcomes(
    scans: Sequence[Scan], fresh: set[str], spent: dict[uuid.UUID, Spent], earlier: dict[str, Any]
) -> list[SyncOutcome]:
    outcomes = []
    for scan in scans:
        if scan.local_id not in fresh:
            row = earlier[scan.local_id]
            outcomes.append(
                SyncOutcome(
                    local_id=scan.local_id,
                    outcome="replayed",
                    redemption_id=row.id,
                    reason=row.reason,
                    remaining=None,
                    first_outcome=row.status,
                )
            )
        elif scan.status == "rejected":
            outcomes.append(
                SyncOutcome(
                    local_id=scan.local_id,
                    outcome="rejected",
                    redemption_id=scan.id,
                    reason=scan.reason,
                    remaining=None,
                )
            )
        else:
            result = spent[scan.id]
            outcomes.append(
                SyncOutcome(
                    local_id=scan.local_id,
                    outcome="accepted" if result.applied else "conflict",
                    redemption_id=scan.id,
                    reason=result.refusal,
                    remaining=Money.of(result.remaining_minor, scan.currency) if result.applied else None,
                )
            )
    return outcomes


async def list_redemptions(
    session: AsyncSession,
    principal: Principal,
    *,
    after_id: uuid.UUID | None,
    limit: int,
    merchant_id: uuid.UUID | None,
    status: str | None,
    voucher_id: uuid.UUID | None,
) -> Sequence[VoucherRedemption]:
    """A page of redemptions; a merchant's key sees its own merchant's only."""
    if principal.merchant_id is not None:
        if merchant_id is not None and merchant_id != principal.merchant_id:
            return []
        merchant_id = principal.merchant_id
    return await RedemptionRepository(session).list(
        after_id=after_id, limit=limit, merchant_id=merchant_id, status=status, voucher_id=voucher_id
    )


def record_of(row: VoucherRedemption) -> RedemptionRecord:
    return RedemptionRecord.of(row)
