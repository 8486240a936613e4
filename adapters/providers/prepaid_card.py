"""Prepaid-card loads: the provider keeps one card per beneficiary reference and loads each entitlement."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.providers.base import ProviderEvent
from adapters.providers.events import parse_card_event
from adapters.providers.http import HttpProviderAdapter


class PrepaidCardAdapter(HttpProviderAdapter):
    product = "prepaid_card"

    def parse_event(self, payload: Mapping[str, Any]) -> ProviderEvent:
        return parse_card_event(payload)
