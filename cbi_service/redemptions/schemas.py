from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ModelWrapValidatorHandler, model_validator

from cbi_service.kit.money import Money, PositiveMoney
from cbi_service.kit.timeutil import AwareDatetimeQuery
from cbi_service.kit.validation import field_error, validate_with
from cbi_service.redemptions.models import REDEMPTION_STATUSES, VoucherRedemption

RedemptionStatus = StrEnum("RedemptionStatus", {s: s for s in REDEMPTION_STATUSES})  # type: ignore[misc]
MAX_SYNC_ITEMS = 10_000
DEVICE_TEXT = r"^[\x21-\x7e]{1,100}$"
JWS_TEXT = r"^[A-Za-z0-9_\-.]{1,2048}$"


class RedemptionCreate(BaseModel):
    """The voucher, as the merchant has it: the `code` typed off the paper, or the QR's `token`."""

    model_config = ConfigDict(extra="forbid")

    code: str | None = Field(default=None, max_length=24, examples=["7KQM-X3PD-W9R2"])
    token: str | None = Field(default=None, pattern=JWS_TEXT, description="The voucher's QR content.")
    amount: PositiveMoney

    @model_validator(mode="wrap")
    @classmethod
    def _one_voucher(cls, data: Any, handler: ModelWrapValidatorHandler[RedemptionCreate]) -> RedemptionCreate:
        problems = []
        if isinstance(data, dict) and (data.get("code") is None) == (data.get("token") is None):
            problems.append(field_error(("code",), "give the voucher's code or its token, not both", None))
        return validate_with(cls.__name__, data, handler, problems)


class RedemptionOut(BaseModel):
    id: uuid.UUID
    voucher_id: uuid.UUID
    amount: Money
    remaining: Money = Field(description="What is left of the voucher after this redemption.")


class SyncItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    local_id: str = Field(pattern=DEVICE_TEXT, description="The scan's id on the device, unique there.")
    token: str = Field(
        max_length=2048, description="The QR content scanned (one that does not verify is `rejected`, not a 422)."
    )
    amount: PositiveMoney
    scanned_at: AwareDatetimeQuery = Field(description="When the voucher was scanned, by the device's clock.")


class SyncRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(pattern=DEVICE_TEXT)
    items: list[SyncItem] = Field(min_length=1, max_length=MAX_SYNC_ITEMS)

    @model_validator(mode="wrap")
    @classmethod
    def _distinct(cls, data: Any, handler: ModelWrapValidatorHandler[SyncRequest]) -> SyncRequest:
        problems = []
        if isinstance(data, dict) and isinstance(data.get("items"), list):
            seen: set[Any] = set()
            for index, item in enumerate(data["items"]):
                local_id = item.get("local_id") if isinstance(item, dict) else None
                if isinstance(local_id, str) and local_id in seen:
                    problems.append(field_error(("items", index, "local_id"), "appears twice in this sync", local_id))
                seen.add(local_id)
        return validate_with(cls.__name__, data, handler, problems)


SyncOutcomeName = Literal["accepted", "replayed", "conflict", "rejected"]


class SyncOutcome(BaseModel):
    local_id: str
    outcome: SyncOutcomeName
    redemption_id: uuid.UUID = Field(description="The scan's record (for `replayed`, the one its first sync made).")
    reason: str | None = Field(
        description="Why not accepted: a conflict's `fully_redeemed`, `exceeds_remaining`, `expired`, `cancelled`, "
        "`not_issued`; a rejection's `bad_signature`, `unknown_voucher`, `expired_at_scan`, `wrong_programme`, "
        "`wrong_currency`, `exceeds_value`, `scanned_in_future`. For `replayed`, the first sync's reason."
    )
    first_outcome: Literal["accepted", "conflict", "rejected"] | None = Field(
        default=None, description="For `replayed`: what the first sync of this scan decided."
    )
    remaining: Money | None = Field(description="For `accepted`: what is left of the voucher.")


class SyncResult(BaseModel):
    device_id: str
    counts: dict[SyncOutcomeName, int]
    items: list[SyncOutcome] = Field(description="One outcome per item, in the order sent.")


class RedemptionRecord(BaseModel):
    id: uuid.UUID
    merchant_id: uuid.UUID
    voucher_id: uuid.UUID | None
    amount: Money
    status: str
    channel: str
    device_id: str | None
    local_id: str | None
    scanned_at: datetime
    reason: str | None
    created_at: datetime

    @classmethod
    def of(cls, row: VoucherRedemption) -> RedemptionRecord:
        return cls(
            id=row.id,
            merchant_id=row.merchant_id,
            voucher_id=row.voucher_id,
            amount=Money.of(row.amount_minor, row.currency),
            status=row.status,
            channel=row.channel,
            device_id=row.device_id,
            local_id=row.local_id,
            scanned_at=row.scanned_at,
            reason=row.reason,
            created_at=row.created_at,
        )
