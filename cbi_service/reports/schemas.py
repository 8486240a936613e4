from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, Field

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
