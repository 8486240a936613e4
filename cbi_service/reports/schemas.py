from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

AgeGroup = Literal["0-5", "6-11", "12-17", "18-59", "60+"]


class PeopleReachedRow(BaseModel):
    country: str = Field(description="ISO 3166-1 alpha-2 code of where the person lives.")
    admin1: str | None
    sector: str
    sex: str
    age_group: AgeGroup
    people: int


class MonthlyPeopleReachedRow(PeopleReachedRow):
    month: str = Field(pattern=r"^\d{4}-\d{2}$", examples=["2026-11"])


class MonthTotal(BaseModel):
    month: str = Field(pattern=r"^\d{4}-\d{2}$", examples=["2026-11"])
    people: int


class PeopleReached(BaseModel):
    period_start: date
    period_end: date
    people_reached: int = Field(description="Distinct people issued at least once in the period.")
    rows: list[PeopleReachedRow] = Field(description="The period by country, admin1, sector, sex and age group.")
    months: list[MonthTotal] = Field(description="Distinct people reached in each month.")
    monthly: list[MonthlyPeopleReachedRow] = Field(description="Each month by the same dimensions.")


class FiveWRow(BaseModel):
    """One row of the 5W, its cells named exactly as the template's header names its columns."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    country: str = Field(alias="Country Country", examples=["Colombia"])
    admin1: str | None = Field(alias="Country Admin1", examples=["Norte de Santander"])
    admin2: str | None = Field(alias="Admin2 Admin2", examples=["Cúcuta"])
    appealing_organisation: str | None = Field(alias="Appealing organisation Name")
    implementation_set_up: Literal["Yes", "No"] = Field(alias="Implementation Set up")
    implementing_partner: str | None = Field(alias="Implementing partner Name")
    month: str = Field(alias="Month", examples=["2026-11"])
    sector: str = Field(alias="Indicator Sector", examples=["Multipurpose Cash Assistance (MCA)"])
    indicator: str | None = Field(alias="Indicator Indicator")
    activity_name: str | None = Field(alias="Activity Name")
    activity_description: str | None = Field(alias="Activity Description")
    rmrp_activity: Literal["Yes", "No"] | None = Field(alias="RMRP Activity")
    cva: Literal["Yes", "No"] = Field(alias="CVA")
    value_usd: str | None = Field(
        alias="Value (in USD)",
        pattern=r"^[0-9]+\.[0-9]{2}$",
        description="The month's issued value in US dollars at the month's rate, to the cent; null when the "
        "month has no rate for one of the currencies paid (`missing_exchange_rates`).",
        examples=["1250.00"],
    )
    delivery_mechanism: str | None = Field(alias="Delivery mechanism", examples=["Prepaid Card"])
    quantity_of_output: int | None = Field(alias="Quantity of output", description="Not used for direct assistance.")
    total: int = Field(alias="Total monthly beneficiaries", description="Distinct people issued in the month.")
    new: int = Field(
        alias="New beneficiaries of the month",
        description="Of those, the people issued for the first time in the calendar year under this activity.",
    )
    in_destination: int = Field(alias="Refugees and Migrants IN DESTINATION")
    in_transit: int = Field(alias="Refugees and Migrants IN TRANSIT")
    host_community: int = Field(alias="Host Communities Beneficiaries")
    pendular: int = Field(alias="Refugees and Migrants PENDULARS")
    returnee: int = Field(alias="Colombian Returnees")
    women_under_18: int = Field(alias="Women under 18")
    men_under_18: int = Field(alias="Men under 18")
    women_above_18: int = Field(alias="Women above 18")
    men_above_18: int = Field(alias="Men above 18")
    other_under_18: int = Field(alias="Other under 18", description="Sex `other` or `unknown`.")
    other_above_18: int = Field(alias="Other above 18")


class RateUsed(BaseModel):
    currency: str
    month: str
    usd_per_unit: str = Field(examples=["0.000251"])
    source: str
    recorded_at: datetime | None = Field(description="When finance recorded it; null for USD itself (1).")


class MissingRate(BaseModel):
    currency: str
    month: str


class RuleBreak(BaseModel):
    row: int = Field(description="The row's index in `rows` (0 for the first).")
    rule: str = Field(examples=["cva_yes"])
    rule_text: str = Field(examples=["CVA Yes needs a Value (in USD) above 0 and a Delivery mechanism."])
    columns: list[str]
    problem: str = Field(examples=["CVA is Yes but Value (in USD) is empty"])
    programme_ids: list[uuid.UUID] = Field(description="The programmes whose people the row counts.")


class FiveWReport(BaseModel):
    month: str = Field(examples=["2026-11"])
    country: str | None
    header: list[str] = Field(description="The template's header, in order: the keys of every row.")
    hxl: list[str] = Field(description="The HXL hashtag of each column, in the same order.")
    rows: list[FiveWRow]
    exchange_rates: list[RateUsed] = Field(description="The rate each value was computed at, with its source.")
    missing_exchange_rates: list[MissingRate] = Field(
        description="Currencies paid in the month that have no rate for it: their rows' value is null."
    )
    passes_quality_rules: bool = Field(description="Whether every row passes R4V's quality rules.")
    rule_breaks: list[RuleBreak]
