from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ModelWrapValidatorHandler, ValidationError, model_validator

from cbi_service.batches.models import BATCH_STATUSES, BatchApproval, BatchExclusion, PaymentBatch
from cbi_service.kit.approvals import ApprovalOut
from cbi_service.kit.money import Money, PositiveMoney
from cbi_service.kit.validation import field_error, validate_with

BatchStatus = StrEnum("BatchStatus", {s: s for s in BATCH_STATUSES})  # type: ignore[misc]
MAX_LISTED_EXCLUSIONS = 1000


class NonNegativeMoney(Money):
    amount: str = Field(pattern=r"^[0-9]+(\.[0-9]+)?$", max_length=24)


class AmountRule(BaseModel):
    """Per-beneficiary amount by household size: `min(base + per_member × household_size, max)`."""

    model_config = ConfigDict(extra="forbid")

    base: NonNegativeMoney
    per_member: NonNegativeMoney
    max: PositiveMoney | None = None

    @model_validator(mode="after")
    def _consistent(self) -> AmountRule:
        problems = []
        currencies = {self.base.currency, self.per_member.currency} | ({self.max.currency} if self.max else set())
        if len(currencies) != 1:
            problems.append(field_error(("per_member", "currency"), "base, per_member and max must share one currency"))
        if self.base.minor + self.per_member.minor <= 0:
            problems.append(field_error(("base", "amount"), "base + per_member must be greater than zero"))
        if problems:
            raise ValidationError.from_exception_data(type(self).__name__, problems)
        return self

    @property
    def currency(self) -> str:
        return self.base.currency

    def minor(self) -> dict[str, int | None]:
        return {
            "base": self.base.minor,
            "per_member": self.per_member.minor,
            "max": self.max.minor if self.max else None,
        }

    @classmethod
    def of(cls, rule: dict[str, int | None], currency: str) -> AmountRule:
        cap = rule.get("max")
        return cls(
            base=NonNegativeMoney.of(rule["base"] or 0, currency),
            per_member=NonNegativeMoney.of(rule["per_member"] or 0, currency),
            max=PositiveMoney.of(cap, currency) if cap is not None else None,
        )


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    programme_id: uuid.UUID
    name: str = Field(min_length=1, max_length=200)
    cycle: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$", examples=["2026-11"])
    amount: PositiveMoney | None = Field(default=None, description="A flat amount per beneficiary.")
    amount_rule: AmountRule | None = None
    beneficiary_ids: list[uuid.UUID] | None = Field(
        default=None,
        min_length=1,
        max_length=200_000,
        description="Default: every active beneficiary enrolled in the programme.",
    )

    @model_validator(mode="wrap")
    @classmethod
    def _one_amount(cls, data: Any, handler: ModelWrapValidatorHandler[BatchCreate]) -> BatchCreate:
        """Reported with the other fields' errors, not only once they pass."""
        problems = []
        if isinstance(data, dict) and (data.get("amount") is None) == (data.get("amount_rule") is None):
            problems.append(field_error(("amount",), "give either amount or amount_rule"))
        return validate_with(cls.__name__, data, handler, problems)

    @property
    def currency(self) -> str:
        if self.amount is not None:
            return self.amount.currency
        assert self.amount_rule is not None
        return self.amount_rule.currency


class ApprovalCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "reject"]
    comment: str | None = Field(default=None, max_length=2000)


class FollowUpCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)


class ExclusionOut(BaseModel):
    beneficiary_id: uuid.UUID
    reason: str = Field(description="not_found | not_enrolled | not_active | already_paid_in_cycle")
    entitlement_id: uuid.UUID | None = Field(
        description="already_paid_in_cycle: the entitlement already held in this cycle; not_active after release:"
        " this batch's entitlement, cancelled unpaid because the beneficiary was deactivated after submit."
    )

    @classmethod
    def of(cls, row: BatchExclusion) -> ExclusionOut:
        return cls(beneficiary_id=row.beneficiary_id, reason=row.reason, entitlement_id=row.entitlement_id)


class BatchOut(BaseModel):
    id: uuid.UUID
    programme_id: uuid.UUID
    name: str
    cycle: str
    status: str
    amount: Money | None
    amount_rule: AmountRule | None
    total: Money
    beneficiary_count: int
    excluded_count: int
    excluded: list[ExclusionOut] | None = Field(
        description=f"Who was left out and why (the first {MAX_LISTED_EXCLUSIONS}; in the single-batch view)."
    )
    counts: dict[str, int] = Field(description="Entitlements per status.")
    approvals_needed: int | None
    approvals: list[ApprovalOut]
    follow_up_of: uuid.UUID | None
    created_by: uuid.UUID
    created_at: datetime
    submitted_at: datetime | None
    approved_at: datetime | None
    released_at: datetime | None
    completed_at: datetime | None
    closed_at: datetime | None = Field(description="When it was rejected or cancelled.")

    @classmethod
    def of(
        cls,
        batch: PaymentBatch,
        *,
        counts: dict[str, int],
        approvals: list[BatchApproval],
        excluded: list[BatchExclusion] | None,
    ) -> BatchOut:
        currency = batch.currency
        return cls(
            id=batch.id,
            programme_id=batch.programme_id,
            name=batch.name,
            cycle=batch.cycle,
            status=batch.status,
            amount=Money.of(batch.amount_minor, currency) if batch.amount_minor is not None else None,
            amount_rule=AmountRule.of(batch.amount_rule, currency) if batch.amount_rule is not None else None,
            total=Money.of(batch.total_minor, currency),
            beneficiary_count=batch.beneficiary_count,
            excluded_count=batch.excluded_count,
            excluded=[ExclusionOut.of(row) for row in excluded] if excluded is not None else None,
            counts=counts,
            approvals_needed=batch.approvals_needed,
            approvals=[ApprovalOut.of(row) for row in approvals],
            follow_up_of=batch.follow_up_of,
            created_by=batch.created_by,
            created_at=batch.created_at,
            submitted_at=batch.submitted_at,
            approved_at=batch.approved_at,
            released_at=batch.released_at,
            completed_at=batch.completed_at,
            closed_at=batch.closed_at,
        )
