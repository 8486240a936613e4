from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ModelWrapValidatorHandler, model_validator
from pydantic_core import InitErrorDetails

from cbi_service.kit.bank_accounts import ACCOUNT_TEXT, HOLDER_NAME, compact_bic, compact_iban, uses_iban
from cbi_service.kit.countries import CountryCode
from cbi_service.kit.money import Money
from cbi_service.kit.validation import field_error, validate_with
from cbi_service.merchants.models import Merchant


class PayoutIn(BaseModel):
    """An IBAN and BIC where the merchant's country uses IBANs; elsewhere `account_number` and `bank_code`
    (and the bank's BIC if it has one)."""

    model_config = ConfigDict(extra="forbid")

    account_name: str = Field(
        min_length=1, max_length=140, pattern=HOLDER_NAME, description="The account holder, as the bank knows it."
    )
    iban: str | None = Field(default=None, max_length=42, examples=["DE89 3704 0044 0532 0130 00"])
    bic: str | None = Field(default=None, max_length=14, examples=["COBADEFFXXX"])
    account_number: str | None = Field(default=None, max_length=34, pattern=ACCOUNT_TEXT)
    bank_code: str | None = Field(default=None, max_length=35, pattern=ACCOUNT_TEXT)


class MerchantCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    country: CountryCode
    programme_ids: list[uuid.UUID] = Field(
        min_length=1, max_length=100, description="Paper-voucher programmes, all in one currency."
    )
    payout: PayoutIn

    @model_validator(mode="wrap")
    @classmethod
    def _check(cls, data: Any, handler: ModelWrapValidatorHandler[MerchantCreate]) -> MerchantCreate:
        problems: list[InitErrorDetails] = []
        if isinstance(data, dict) and isinstance(data.get("payout"), dict) and isinstance(data.get("country"), str):
            problems = _payout_problems(data["country"], data["payout"])
        if isinstance(data, dict) and isinstance(data.get("programme_ids"), list):
            ids = data["programme_ids"]
            if len({str(i) for i in ids}) != len(ids):
                problems.append(field_error(("programme_ids",), "names a programme twice", ids))
        model = validate_with(cls.__name__, data, handler, problems)
        model.payout = _compacted(model.payout, model.country)
        return model


def _payout_problems(country: str, payout: dict[str, Any]) -> list[InitErrorDetails]:
    """What is wrong with the payout account for a merchant of `country`, field by field."""
    problems: list[InitErrorDetails] = []

    def wrong(field: str, message: str) -> None:
        problems.append(field_error(("payout", field), message, payout.get(field)))

    def check(field: str, parse: Any) -> None:
        value = payout.get(field)
        if isinstance(value, str):
            try:
                parse(value)
            except ValueError as exc:
                wrong(field, str(exc))

    if uses_iban(country):
        for field in ("iban", "bic"):
            if payout.get(field) is None:
                wrong(field, f"required: {country} uses IBANs")
        for field in ("account_number", "bank_code"):
            if payout.get(field) is not None:
                wrong(field, f"not used in {country}, which uses IBANs: give iban and bic")
        check("iban", lambda text: compact_iban(text, country))
    else:
        if payout.get("iban") is not None:
            wrong("iban", f"{country} has no IBAN: give account_number and bank_code")
        for field in ("account_number", "bank_code"):
            if payout.get(field) is None:
                wrong(field, f"required: {country} has no IBAN")
    check("bic", compact_bic)
    return problems


def _compacted(payout: PayoutIn, country: str) -> PayoutIn:
    """The payout with IBAN and BIC in their compact forms (validated before)."""
    return payout.model_copy(
        update={
            "iban": compact_iban(payout.iban, country) if payout.iban else None,
            "bic": compact_bic(payout.bic) if payout.bic else None,
            "account_number": payout.account_number.replace(" ", "") if payout.account_number else None,
            "bank_code": payout.bank_code.replace(" ", "") if payout.bank_code else None,
        }
    )


class PayoutOut(BaseModel):
    account_name: str
    iban: str | None
    bic: str | None
    account_number: str | None
    bank_code: str | None


class MerchantOut(BaseModel):
    id: uuid.UUID
    name: str
    country: str
    currency: str = Field(description="The currency of the programmes it serves, in which it is paid.")
    programme_ids: list[uuid.UUID]
    payout: PayoutOut
    created_at: datetime

    @classmethod
    def of(cls, merchant: Merchant, programme_ids: list[uuid.UUID]) -> MerchantOut:
        return cls(
            id=merchant.id,
            name=merchant.name,
            country=merchant.country,
            currency=merchant.currency,
            programme_ids=programme_ids,
            payout=PayoutOut(
                account_name=merchant.payout_account_name,
                iban=merchant.payout_iban,
                bic=merchant.payout_bic,
                account_number=merchant.payout_account_number,
                bank_code=merchant.payout_bank_code,
            ),
            created_at=merchant.created_at,
        )


class MerchantDetail(MerchantOut):
    unsettled: Money = Field(description="Redeemed at this merchant and not yet paid to it (its payable accounts).")
