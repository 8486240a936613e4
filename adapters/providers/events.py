"""Webhook bodies (CONTRACT §8) validated and mapped to `ProviderEvent`.

A prepaid-card provider can only report loads and failures; a voucher provider also redemptions and
expiries. Each adapter validates against its own set so a misrouted or forged-but-signed event type is
refused instead of applied. Unknown extra fields are ignored so providers can add fields without breaking us.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from adapters.providers import money
from adapters.providers.base import EventType, MalformedEvent, ProviderEvent

_RFC3339_START = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt]")


def _rfc3339_text(value: object) -> object:
    """An event's time is RFC 3339 text (§2); pydantic alone would read a number, or digits, as Unix time."""
    if not isinstance(value, str) or not _RFC3339_START.match(value):
        raise ValueError("must be an RFC 3339 timestamp with its offset")
    return value


Rfc3339 = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class _Data(_Model):
    entitlement_id: UUID
    provider_ref: str = Field(min_length=1, max_length=128)


class _CardIssuedData(_Data):
    card_token: str = Field(min_length=1, max_length=128)
    card_last4: str = Field(pattern=r"^[0-9]{4}$")


class _VoucherIssuedData(_Data):
    voucher_code: str = Field(min_length=1, max_length=64)


class _FailedData(_Data):
    reason: str = Field(min_length=1, max_length=500)
    retryable: StrictBool


class _Money(_Model):
    amount: str = Field(max_length=24)
    currency: str = Field(pattern=r"^[A-Z]{3}$")

    @model_validator(mode="after")
    def _positive_with_exact_digits(self) -> _Money:
        if self.minor <= 0:
            raise ValueError("amount must be positive")
        return self

    @property
    def minor(self) -> int:
        return money.to_minor(self.amount, self.currency)


class _RedeemedData(_Data):
    amount: _Money
    merchant: str = Field(min_length=1, max_length=200)

    @model_validator(mode="before")
    @classmethod
    def _accept_flat_money(cls, data: Any) -> Any:
        """Also accept `"amount": "12.50", "currency": "COP"` side by side, a common provider variant."""
        if isinstance(data, Mapping) and isinstance(data.get("amount"), str) and "currency" in data:
            return {**data, "amount": {"amount": data["amount"], "currency": data["currency"]}}
        return data


class _Event(_Model):
    """What every event carries; subclasses narrow `type` and `data` and add their own details."""

    timestamp: Rfc3339
    type: EventType
    data: _Data

    def to_event(self) -> ProviderEvent:
        return ProviderEvent(
            type=self.type,
            timestamp=self.timestamp,
            entitlement_id=self.data.entitlement_id,
            provider_ref=self.data.provider_ref,
        )


class _CardIssued(_Event):
    type: Literal["entitlement.issued"]
    data: _CardIssuedData

    def to_event(self) -> ProviderEvent:
        return replace(super().to_event(), card_token=self.data.card_token, card_last4=self.data.card_last4)


class _VoucherIssued(_Event):
    type: Literal["entitlement.issued"]
    data: _VoucherIssuedData

    def to_event(self) -> ProviderEvent:
        return replace(super().to_event(), voucher_code=self.data.voucher_code)


class _Failed(_Event):
    type: Literal["entitlement.failed"]
    data: _FailedData

    def to_event(self) -> ProviderEvent:
        return replace(super().to_event(), reason=self.data.reason, retryable=self.data.retryable)


class _Redeemed(_Event):
    type: Literal["voucher.redeemed"]
    data: _RedeemedData

    def to_event(self) -> ProviderEvent:
        return replace(
            super().to_event(),
            amount_minor=self.data.amount.minor,
            currency=self.data.amount.currency,
            merchant=self.data.merchant,
        )


class _Expired(_Event):
    type: Literal["voucher.expired"]


_CARD_EVENTS: TypeAdapter[_CardIssued | _Failed] = TypeAdapter(
    Annotated[_CardIssued | _Failed, Field(discriminator="type")]
)
_VOUCHER_EVENTS: TypeAdapter[_VoucherIssued | _Failed | _Redeemed | _Expired] = TypeAdapter(
    Annotated[_VoucherIssued | _Failed | _Redeemed | _Expired, Field(discriminator="type")]
)


def parse_card_event(payload: Mapping[str, Any]) -> ProviderEvent:
    """Events a prepaid-card provider may send: `entitlement.issued` (card token + last 4), `.failed`."""
    try:
        return _CARD_EVENTS.validate_python(_as_dict(payload)).to_event()
    except ValidationError as exc:
        raise _malformed(exc, payload) from None


def parse_voucher_event(payload: Mapping[str, Any]) -> ProviderEvent:
    """Events a voucher provider may send: issued (voucher code), failed, redeemed, expired."""
    try:
        return _VOUCHER_EVENTS.validate_python(_as_dict(payload)).to_event()
    except ValidationError as exc:
        raise _malformed(exc, payload) from None


def _as_dict(payload: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(payload, Mapping):
        raise MalformedEvent("webhook body must be a JSON object", [{"field": "", "message": "not a JSON object"}])
    return dict(payload)


def _malformed(exc: ValidationError, payload: Mapping[str, Any]) -> MalformedEvent:
    """Field paths without the union tag, and messages without input values (bodies may hold card data)."""
    tag = payload.get("type")
    errors = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = list(error["loc"])
        if loc and loc[0] == tag:
            loc = loc[1:]
        field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
        errors.append({"field": field or "type", "message": error["msg"].removeprefix("Value error, ")})
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return MalformedEvent(f"malformed provider event: {summary}", errors)
