"""The HTTP API spoken by the built-in adapters and implemented by the provider simulator.

One request carries a chunk of instructions and the answer is per item, so 100,000 entitlements are a few
hundred requests; each item carries its own `idempotency_key` (the entitlement id) because a batch request
has no single key that could describe all of its items.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from adapters.providers.base import DeliveryMechanism, InstructionStatus

MAX_INSTRUCTIONS_PER_REQUEST = 1000


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class InstructionIn(_Wire):
    model_config = ConfigDict(frozen=True, extra="forbid")

    idempotency_key: str = Field(min_length=1, max_length=128)
    product: DeliveryMechanism
    beneficiary_ref: str = Field(min_length=1, max_length=128)
    amount_minor: int
    currency: str = Field(min_length=3, max_length=3)
    programme_ref: str = Field(min_length=1, max_length=128)
    voucher_validity_days: int | None = None


class InstructionsRequest(_Wire):
    model_config = ConfigDict(frozen=True, extra="forbid")

    instructions: list[InstructionIn] = Field(min_length=1, max_length=MAX_INSTRUCTIONS_PER_REQUEST)


class InstructionResult(_Wire):
    idempotency_key: str
    accepted: bool
    status: InstructionStatus
    provider_ref: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    retryable: bool = False


class InstructionsResponse(_Wire):
    results: list[InstructionResult]


class InstructionView(_Wire):
    """`GET /instructions/{idempotency_key}`."""

    idempotency_key: str
    status: InstructionStatus
    provider_ref: str | None = None
    product: DeliveryMechanism | None = None
    amount_minor: int | None = None
    remaining_minor: int | None = None
    currency: str | None = None
    card_token: str | None = None
    card_last4: str | None = None
    voucher_code: str | None = None
    expires_at: datetime | None = None
    reason: str | None = None
    retryable: bool | None = None


class CancelRequest(_Wire):
    provider_ref: str | None = None


class CancelResponse(_Wire):
    idempotency_key: str
    cancelled: bool
    status: InstructionStatus
    provider_ref: str | None = None
    error_code: str | None = None
    error_message: str | None = None


class ErrorDetail(_Wire):
    code: str
    message: str


class ErrorBody(_Wire):
    """Every non-2xx answer of the provider API."""

    error: ErrorDetail
