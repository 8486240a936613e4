from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from cbi_service.auth.dependencies import require_roles, require_roles_apart
from cbi_service.auth.roles import Principal, Role
from cbi_service.kit.db import SessionDep
from cbi_service.kit.group_commit import GroupCommit
from cbi_service.kit.idempotency import Answer, IdempotencyDep, RequiredKeyDep, fingerprint
from cbi_service.kit.pagination import Page, PageDep, page_of
from cbi_service.kit.routing import StorableTextRoute
from cbi_service.redemptions import service
from cbi_service.redemptions.schemas import (
    RedemptionCreate,
    RedemptionOut,
    RedemptionRecord,
    RedemptionStatus,
    SyncRequest,
    SyncResult,
)

router = APIRouter(prefix="/v1/voucher-redemptions", tags=["voucher redemptions"], route_class=StorableTextRoute)
Merchant = Annotated[Principal, Depends(require_roles(Role.merchant))]
#: A merchant redeeming online: its request opens no unit of work, the group commit carries it out.
Redeemer = Annotated[Principal, Depends(require_roles_apart(Role.merchant))]
#: Conflicts are reviewed by the agency; a merchant's key sees its own merchant's redemptions.
Reader = Annotated[Principal, Depends(require_roles(Role.admin, Role.finance, Role.auditor, Role.merchant))]


@router.post("", status_code=201, response_model=RedemptionOut)
async def redeem_voucher(
    request: Request, body: RedemptionCreate, principal: Redeemer, key: RequiredKeyDep
) -> Response:
    """Redeem `amount` of a voucher at the caller's merchant, now: the voucher named by its `code` or its QR
    `token` (Idempotency-Key required). A voucher may be redeemed in parts up to its value. Fully redeemed,
    expired, cancelled, or of a programme the merchant does not serve → 409; more than it holds → 422; a
    token that does not verify or a mistyped code → 422. Of two merchants redeeming one voucher at once,
    exactly one succeeds."""
    redemption = service.OnlineRedemption(
        principal=principal,
        key=key,
        request_hash=fingerprint(request.method, request.url.path, body),
        body=body,
        request_id=structlog.contextvars.get_contextvars().get("request_id"),
        received_at=datetime.now(UTC),
    )
    writer: GroupCommit[service.OnlineRedemption, Answer] = request.app.state.online_redemptions
    return (await writer.submit(redemption)).response()


@router.post("/sync", response_model=SyncResult)
async def sync_offline_redemptions(
    request: Request, body: SyncRequest, session: SessionDep, principal: Merchant, idem: IdempotencyDep
) -> Response:
    """A merchant's device sends the vouchers it scanned offline (up to 10,000 at once); each gets an
    outcome: `accepted`, `replayed` (this device's `local_id` was synced before: nothing is redeemed twice),
    `conflict` (the voucher was spent, or had run out, before this scan synced: kept for review), or `rejected`
    with a reason (a token that does not verify, expired at scan time, another programme). A sync's scans of
    one voucher are applied in scan order: the earliest wins."""
    settings = request.app.state.settings
    return await idem.run(body, lambda: service.sync(session, settings, principal, body))


@router.get("", response_model=Page[RedemptionRecord])
async def list_voucher_redemptions(
    session: SessionDep,
    principal: Reader,
    page: PageDep,
    status: Annotated[RedemptionStatus | None, Query()] = None,
    merchant_id: uuid.UUID | None = None,
    voucher_id: uuid.UUID | None = None,
) -> Page[RedemptionRecord]:
    """Redemptions, oldest first; `?status=conflict` lists the scans kept for review. A merchant's key lists
    its own merchant's only."""
    rows = await service.list_redemptions(
        session,
        principal,
        after_id=page.after_id(),
        limit=page.limit,
        merchant_id=merchant_id,
        status=status.value if status else None,
        voucher_id=voucher_id,
    )
    items, cursor = page_of(rows, page.limit, lambda r: [r.id])
    return Page(items=[service.record_of(r) for r in items], next_cursor=cursor)
