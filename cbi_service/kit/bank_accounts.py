"""Bank accounts money is paid to or from: an IBAN with its bank's BIC, or, in a country without IBANs, an
account number and a bank code. Checked with schwifty (the IBAN registry's formats and check digits, BIC
structure). Merchants are paid into one; settlements are paid from the agency's (`SettlementAccount`)."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from schwifty import BIC, IBAN, exceptions, registry

ACCOUNT_TEXT = r"^[A-Za-z0-9][A-Za-z0-9 -]*$"
HOLDER_NAME = r"^[^\x00-\x1f\x7f]+$"
"""An account holder's name as a payment file can carry it: any script, no control characters (XML refuses
them, and a bank's name field is one line)."""


def uses_iban(country: str) -> bool:
    """Whether the country's banks number accounts with IBANs (the registry's countries, not the ones it only
    reserves a format for)."""
    try:
        return not registry.get_iban_spec(country).aspirational
    except exceptions.SchwiftyException:
        return False


def compact_iban(text: str, country: str | None = None) -> str:
    """The IBAN without spaces, or ValueError saying what is wrong with it (or that it is not of `country`)."""
    try:
        iban = IBAN(text)
    except exceptions.SchwiftyException as exc:
        raise ValueError(f"not a valid IBAN: {exc}") from None
    if country is not None and iban.country_code != country:
        raise ValueError(f"must be an IBAN of {country}")
    return str(iban.compact)


def compact_bic(text: str) -> str:
    """The BIC without spaces, or ValueError saying what is wrong with it."""
    try:
        return str(BIC(text).compact)
    except exceptions.SchwiftyException as exc:
        raise ValueError(f"not a valid BIC: {exc}") from None


class SettlementAccount(BaseModel):
    """The agency's account merchant settlements are paid from (`CBI_SETTLEMENT_ACCOUNT`, JSON): the debtor
    of every pain.001 credit transfer. `iban` with `bic`, or `account_number` with `bank_code`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=140, pattern=HOLDER_NAME)
    iban: str | None = Field(default=None, max_length=42)
    bic: str | None = Field(default=None, max_length=14)
    account_number: str | None = Field(default=None, max_length=34, pattern=ACCOUNT_TEXT)
    bank_code: str | None = Field(default=None, max_length=35, pattern=ACCOUNT_TEXT)

    @field_validator("iban")
    @classmethod
    def _iban(cls, value: str | None) -> str | None:
        return compact_iban(value) if value is not None else None

    @field_validator("bic")
    @classmethod
    def _bic(cls, value: str | None) -> str | None:
        return compact_bic(value) if value is not None else None

    @field_validator("account_number", "bank_code")
    @classmethod
    def _compact(cls, value: str | None) -> str | None:
        return value.replace(" ", "") if value is not None else None

    @model_validator(mode="after")
    def _one_account(self) -> Self:
        if (self.iban is None) == (self.account_number is None):
            raise ValueError("give either iban (with bic) or account_number (with bank_code)")
        if self.iban is not None and self.bic is None:
            raise ValueError("an iban needs its bank's bic")
        if self.account_number is not None and self.bank_code is None:
            raise ValueError("an account_number needs its bank_code")
        return self
