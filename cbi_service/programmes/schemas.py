from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ModelWrapValidatorHandler, StringConstraints, model_validator

from cbi_service.accounting.service import ProgrammeBalances
from cbi_service.kit.countries import CountryCode
from cbi_service.kit.money import (
    CurrencyCode,
    Money,
    PositiveMoney,
    currency_exponent,
    format_amount,
    parse_amount,
)
from cbi_service.kit.validation import field_error, validate_with
from cbi_service.programmes.models import DELIVERY_MECHANISMS, SECTORS, Programme

Sector = StrEnum("Sector", {s: s for s in SECTORS})  # type: ignore[misc]
DeliveryMechanism = StrEnum("DeliveryMechanism", {m: m for m in DELIVERY_MECHANISMS})  # type: ignore[misc]


class ApprovalBand(BaseModel):
    model_config = ConfigDict(extra="forbid")

    up_to: str = Field(pattern=r"^[0-9]+(\.[0-9]+)?$", max_length=24, examples=["5000000.00"])
    approvals_required: int = Field(ge=1, le=10)


def _known(currency: str) -> bool:
    """Whether band limits can be read in `currency` (if not, the `currency` field says why, once)."""
    try:
        currency_exponent(currency)
    except ValueError:
        return False
    return True


OrganisationName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
IndicatorText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
ActivityName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
ActivityDescription = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=1000)]

REPORTING_FIELDS = (
    "appealing_organisation",
    "implementing_partner",
    "indicator",
    "activity_name",
    "activity_description",
    "rmrp_activity",
)
"""The programme's reporting identity in R4V's 5W (§16), in the template's order."""
REQUIRED_REPORTING_FIELDS = ("appealing_organisation", "indicator", "activity_name", "rmrp_activity")
"""What a 5W row cannot be filed without; `implementing_partner` and `activity_description` may stay empty."""


class ReportingIdentity(BaseModel):
    """How the programme's people reached appear in R4V's 5W (§16). Optional when the programme is created,
    so that nothing that creates programmes today breaks; until `appealing_organisation`, `indicator`,
    `activity_name` and `rmrp_activity` are set, the 5W names its rows as breaking R4V's rules and will not
    serve them as a file (set them with `PATCH /v1/programmes/{id}`)."""

    appealing_organisation: OrganisationName | None = Field(
        default=None, description="The RMRP appealing organisation reporting the activity.", examples=["ACNUR"]
    )
    implementing_partner: OrganisationName | None = Field(
        default=None,
        description="The partner that implements it, if any: the 5W's `Implementation Set up` is then Yes.",
    )
    indicator: IndicatorText | None = Field(
        default=None,
        description="The R4V indicator, as its sector's indicator list words it.",
        examples=["Number of people receiving multipurpose cash assistance"],
    )
    activity_name: ActivityName | None = Field(default=None, examples=["MPC Norte de Santander"])
    activity_description: ActivityDescription | None = None
    rmrp_activity: bool | None = Field(default=None, description="Whether the activity is in the RMRP.")


class ProgrammeCreate(ReportingIdentity):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    country: CountryCode
    currency: CurrencyCode
    sector: Sector
    delivery_mechanism: DeliveryMechanism
    provider: str = Field(min_length=1, max_length=100)
    approvals_required: int = Field(default=2, ge=1, le=10)
    approval_bands: list[ApprovalBand] | None = Field(default=None, max_length=20)
    voucher_validity_days: int | None = Field(
        default=None,
        ge=1,
        le=3650,
        description="Days a voucher stays valid from its issue; required for paper_voucher.",
    )

    @model_validator(mode="after")
    def _check_paper_voucher_validity(self) -> ProgrammeCreate:
        if self.delivery_mechanism == "paper_voucher" and self.voucher_validity_days is None:
            raise ValueError("paper vouchers need voucher_validity_days: their signed token carries an expiry")
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _check_bands(cls, data: Any, handler: ModelWrapValidatorHandler[ProgrammeCreate]) -> ProgrammeCreate:
        """Each band's `up_to` in the currency's digits, positive and above the previous band's, named by its
        place (`approval_bands[1].up_to`) and reported with the other fields' errors."""
        problems = []
        bands = data.get("approval_bands") if isinstance(data, dict) else None
        currency = data.get("currency") if isinstance(data, dict) else None
        if isinstance(bands, list) and isinstance(currency, str) and _known(currency):
            previous: int | None = None
            for index, band in enumerate(bands):
                up_to = band.get("up_to") if isinstance(band, dict) else None
                if not isinstance(up_to, str):
                    continue  # the band's own validation reports it
                try:
                    limit = parse_amount(up_to, currency)
                except ValueError as exc:
                    problems.append(field_error(("approval_bands", index, "up_to"), str(exc), up_to))
                    continue
                if limit <= 0:
                    problems.append(field_error(("approval_bands", index, "up_to"), "must be greater than zero", up_to))
                elif previous is not None and limit <= previous:
                    message = "must be greater than the previous band's up_to"
                    problems.append(field_error(("approval_bands", index, "up_to"), message, up_to))
                previous = limit if limit > 0 else previous
        return validate_with(cls.__name__, data, handler, problems)

    def bands_minor(self) -> list[dict[str, int]]:
        return [
            {"up_to_minor": parse_amount(b.up_to, self.currency), "approvals_required": b.approvals_required}
            for b in self.approval_bands or []
        ]


class ReportingPatch(ReportingIdentity):
    """Changes to the reporting identity; omitted fields stay. `implementing_partner` and
    `activity_description` may be cleared with null; the other four, once set, only change."""

    model_config = ConfigDict(extra="forbid")


class ProgrammeOut(BaseModel):
    id: uuid.UUID
    name: str
    country: str
    currency: str
    sector: str
    delivery_mechanism: str
    provider: str
    approvals_required: int
    approval_bands: list[ApprovalBand]
    voucher_validity_days: int | None
    appealing_organisation: str | None
    implementing_partner: str | None
    indicator: str | None
    activity_name: str | None
    activity_description: str | None
    rmrp_activity: bool | None
    created_at: datetime

    @classmethod
    def of(cls, programme: Programme) -> ProgrammeOut:
        return cls(
            id=programme.id,
            name=programme.name,
            country=programme.country,
            currency=programme.currency,
            sector=programme.sector,
            delivery_mechanism=programme.delivery_mechanism,
            provider=programme.provider,
            approvals_required=programme.approvals_required,
            approval_bands=[
                ApprovalBand(
                    up_to=format_amount(b["up_to_minor"], programme.currency),
                    approvals_required=b["approvals_required"],
                )
                for b in programme.approval_bands
            ],
            voucher_validity_days=programme.voucher_validity_days,
            appealing_organisation=programme.appealing_organisation,
            implementing_partner=programme.implementing_partner,
            indicator=programme.indicator,
            activity_name=programme.activity_name,
            activity_description=programme.activity_description,
            rmrp_activity=programme.rmrp_activity,
            created_at=programme.created_at,
        )


class FundingCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: PositiveMoney
    source: str = Field(min_length=1, max_length=200, description="The donor's name.", examples=["ECHO"])
    reference: str = Field(min_length=1, max_length=200, description="The grant or transfer reference.")


class ProgrammeBalancesOut(BaseModel):
    """Read from the ledger; `funded = available + committed + disbursed` always (`disbursed` includes
    `redeemed`)."""

    programme_id: uuid.UUID
    funded: Money
    available: Money
    committed: Money
    disbursed: Money
    redeemed: Money
    returned: Money

    @classmethod
    def of(cls, programme_id: uuid.UUID, balances: ProgrammeBalances) -> ProgrammeBalancesOut:
        c = balances.currency
        return cls(
            programme_id=programme_id,
            funded=Money.of(balances.funded, c),
            available=Money.of(balances.available, c),
            committed=Money.of(balances.committed, c),
            disbursed=Money.of(balances.disbursed, c),
            redeemed=Money.of(balances.redeemed, c),
            returned=Money.of(balances.returned, c),
        )


class FundingOut(BaseModel):
    transaction_id: uuid.UUID
    programme_id: uuid.UUID
    amount: Money
    source: str
    reference: str
    posted_at: datetime
    balances: ProgrammeBalancesOut
