"""Country codes at the API edge: ISO 3166-1 alpha-2, shared by programmes and beneficiaries."""

from __future__ import annotations

from typing import Annotated

import pycountry
from pydantic import AfterValidator, Field


def _check_country(code: str) -> str:
    if pycountry.countries.get(alpha_2=code) is None:
        raise ValueError("not an ISO 3166-1 alpha-2 country code")
    return code


CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$", examples=["CO"]), AfterValidator(_check_country)]
