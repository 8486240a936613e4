"""The API's view of the providers a programme may name."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ProviderOut(BaseModel):
    name: str = Field(description="What a programme's `provider` names.")
    adapter: str = Field(description="The adapter that speaks to the provider.")
    delivery_mechanisms: list[str] = Field(description="The `delivery_mechanism` values a programme may pair with it.")


class ProviderList(BaseModel):
    items: list[ProviderOut]
