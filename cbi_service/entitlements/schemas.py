from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from cbi_service.entitlements.models import ENTITLEMENT_STATUSES, Entitlement
from cbi_service.kit.money import Money

EntitlementStatus = StrEnum("EntitlementStatus", {s: s for s in ENTITLEMENT_STATUSES})  # type: ignore[misc]


class StatusChange(BaseModel):
    status: str
    at: datetime
    actor: str | None = Field(description="Who moved it: an API key's name, the worker, or the provider.")
    detail: dict[str, Any] | None


class Failure(BaseModel):
    reason: str
    retryable: bool | None


class EntitlementOut(BaseModel):
    id: uuid.UUID
    batch_id: uuid.UUID
    programme_id: uuid.UUID
    beneficiary_id: uuid.UUID
    cycle: str
    amount: Money
    redeemed: Money
    remaining: Money
    status: str
    provider_ref: str | None
    card_token: str | None = Field(description="The provider's card token; full card numbers are never stored.")
    card_last4: str | None
    voucher_code: str | None
    voucher_token: str | None = Field(
        description="A paper voucher's QR token: a compact JWS (EdDSA) to check against GET /v1/vouchers/keys."
    )
    expires_at: datetime | None
    failure: Failure | None
    created_at: datetime
    submitted_at: datetime | None
    issued_at: datetime | None
    history: list[StatusChange] | None = Field(
        default=None, description="Status history, oldest first (in the single-entitlement view only)."
    )

    @classmethod
    def of(cls, entitlement: Entitlement, history: list[StatusChange] | None = None) -> EntitlementOut:
        currency = entitlement.currency
        failure = None
        if entitlement.failure_reason is not None:
            failure = Failure(reason=entitlement.failure_reason, retryable=entitlement.failure_retryable)
        return cls(
            id=entitlement.id,
            batch_id=entitlement.batch_id,
            programme_id=entitlement.programme_id,
            beneficiary_id=entitlement.beneficiary_id,
            cycle=entitlement.cycle,
            amount=Money.of(entitlement.amount_minor, currency),
            redeemed=Money.of(entitlement.redeemed_minor, currency),
            remaining=Money.of(entitlement.remaining_minor, currency),
            status=entitlement.status,
            provider_ref=entitlement.provider_ref,
            card_token=entitlement.card_token,
            card_last4=entitlement.card_last4,
            voucher_code=entitlement.voucher_code,
            voucher_token=entitlement.voucher_token,
            expires_at=entitlement.expires_at,
            failure=failure,
            created_at=entitlement.created_at,
            submitted_at=entitlement.submitted_at,
            issued_at=entitlement.issued_at,
            history=history,
        )
