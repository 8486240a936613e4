"""Vouchers redeemed at merchants: online, one at a time, and offline, a device's scans synced in bulk.

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
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.audit.service import record_audit
from cbi_service.auth.roles import Principal
from cbi_service.entitlements import service as entitlements
from cbi_service.entitlements.service import Spend, Spent, VoucherRef
from cbi_service.kit.errors import Conflict, NotFound, UnprocessableEntity
from cbi_service.kit.ids import new_id
from cbi_service.kit.money import Money, require_currency
from cbi_service.kit.settings import Settings
from cbi_service.kit.signing import SigningKeys
from cbi_service.merchants import service as merchants
from cbi_service.merchants.service import MerchantRef
from cbi_service.redemptions.models import VoucherRedemption
from cbi_service.redemptions.repository import RedemptionRepository, Scan
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


async def redeem(
    session: AsyncSession, settings: Settings, principal: Principal, body: RedemptionCreate
) -> RedemptionOut:
    """Redeem `amount` of the voucher now, at the caller's merchant."""
    merchant = await _merchant_of(session, principal)
    voucher = await _voucher(session, settings, body)
    if voucher.programme_id not in merchant.programme_ids:
        raise Conflict("This merchant does not serve the voucher's programme.")
    amount = require_currency(body.amount, voucher.currency)
    now = datetime.now(UTC)
    spend = Spend(voucher.id, amount, merchant.id, new_id(), now)
    # Locked, then recorded, then spent: the record refers to the voucher (so after its lock, see
    # `lock_vouchers`), and the spend's ledger posting, which holds the programme's `disbursed` account until
    # the commit, comes last. A refusal raises, and the record goes with the rest of the unit of work.
    locked = await entitlements.lock_vouchers(session, [voucher.id])
    await RedemptionRepository(session).record_online(
        spend.redemption_id, merchant.id, voucher.id, voucher.currency, amount, now
    )
    [spent] = await entitlements.spend_vouchers(session, [spend], actor=principal, source=principal.name, locked=locked)
    if spent.refusal == "exceeds_remaining":
        remaining = Money.of(spent.remaining_minor, voucher.currency).amount
        raise UnprocessableEntity(
            "The voucher holds less than this amount.",
            errors=[{"field": "amount", "message": f"more than the {remaining} {voucher.currency} left"}],
        )
    if spent.refusal == "unknown":
        raise NotFound("Voucher not found.")
    if spent.refusal is not None:
        raise Conflict(_CONFLICT_DETAIL[spent.refusal], extra={"reason": spent.refusal})
    return RedemptionOut(
        id=spend.redemption_id,
        voucher_id=voucher.id,
        amount=Money.of(amount, voucher.currency),
        remaining=Money.of(spent.remaining_minor, voucher.currency),
    )


async def _merchant_of(session: AsyncSession, principal: Principal) -> MerchantRef:
    if principal.merchant_id is None:
        raise RuntimeError("a merchant route reached without a merchant's key")
    return await merchants.merchant_ref(session, principal.merchant_id)


async def _voucher(session: AsyncSession, settings: Settings, body: RedemptionCreate) -> VoucherRef:
    """The voucher the code or token names: a token that does not verify or a mistyped code is a 422."""
    if body.token is not None:
        try:
            presented = read_token(body.token)
            voucher_id = presented.claims.voucher_id
            found = (await entitlements.signed_vouchers(session, [voucher_id])).get(voucher_id)
            trusted(voucher_keys(settings), presented, found.token if found else None)
        except InvalidVoucherToken as exc:
            raise UnprocessableEntity(
                "The voucher's token does not verify.", errors=[{"field": "token", "message": str(exc)}]
            ) from exc
    else:
        try:
            code = normalize_code(body.code or "")
        except ValueError as exc:
            raise UnprocessableEntity("Not a voucher code.", errors=[{"field": "code", "message": str(exc)}]) from exc
        found = await entitlements.signed_voucher_by_code(session, code)
    if found is None:
        raise NotFound("Voucher not found.")
    return found


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
    spends = [Spend(s.voucher_id, s.amount_minor, merchant.id, s.id, s.scanned_at) for s in spendable if s.voucher_id]
    spent = await entitlements.spend_vouchers(session, spends, actor=principal, source=principal.name, locked=locked)
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
