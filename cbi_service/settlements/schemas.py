from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cbi_service.kit.approvals import ApprovalOut
from cbi_service.kit.money import Money
from cbi_service.settlements.models import MerchantSettlement, SettlementApproval


class SettlementCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    merchant_id: uuid.UUID


class SettlementDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"]
    comment: str | None = Field(default=None, max_length=2000)


class SettlementPaid(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bank_reference: str = Field(
        min_length=1,
        max_length=35,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 /._-]*$",
        description="The bank's reference for the credit transfer, as on its statement.",
    )


class SettlementRefused(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        min_length=1,
        max_length=140,
        description="Why the bank refused the payment file, as it said (a pain.002 reason code, e.g. AC04 "
        "closed account, and its text).",
    )


class ProgrammeShare(BaseModel):
    programme_id: uuid.UUID
    total: Money = Field(description="What this programme's payable account owes in the settlement.")


class SettlementOut(BaseModel):
    id: uuid.UUID
    merchant_id: uuid.UUID
    status: str = Field(
        description="draft, pending_approval, approved, released, paid, rejected, cancelled or refused (the bank "
        "refused its payment file)."
    )
    total: Money
    redemption_count: int
    programmes: list[ProgrammeShare]
    approvals_needed: int | None = Field(description="Set on submit, from the programmes' approval bands.")
    approvals: list[ApprovalOut]
    bank_reference: str | None
    refusal_reason: str | None = Field(description="Why the bank refused the payment file, once refused.")
    created_by: uuid.UUID
    created_at: datetime
    submitted_at: datetime | None
    approved_at: datetime | None
    released_at: datetime | None
    paid_at: datetime | None
    closed_at: datetime | None

    @classmethod
    def of(
        cls,
        settlement: MerchantSettlement,
        *,
        programmes: list[tuple[uuid.UUID, int]],
        approvals: list[SettlementApproval],
    ) -> SettlementOut:
        currency = settlement.currency
        return cls(
            id=settlement.id,
            merchant_id=settlement.merchant_id,
            status=settlement.status,
            total=Money.of(settlement.total_minor, currency),
            redemption_count=settlement.redemption_count,
            programmes=[ProgrammeShare(programme_id=p, total=Money.of(t, currency)) for p, t in programmes],
            approvals_needed=settlement.approvals_needed,
            approvals=[ApprovalOut.of(a) for a in approvals],
            bank_reference=settlement.bank_reference,
            refusal_reason=settlement.refusal_reason,
            created_by=settlement.created_by,
            created_at=settlement.created_at,
            submitted_at=settlement.submitted_at,
            approved_at=settlement.approved_at,
            released_at=settlement.released_at,
            paid_at=settlement.paid_at,
            closed_at=settlement.closed_at,
        )
