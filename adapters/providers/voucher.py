"""E-vouchers: issued with a code and a validity, redeemed (possibly in parts) at merchants, or expired."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adapters.providers.base import ProviderEvent
from adapters.providers.events import parse_voucher_event
from adapters.providers.http import HttpProviderAdapter


class VoucherAdapter(HttpProviderAdapter):
    product = "voucher"

    def parse_event(self, payload: Mapping[str, Any]) -> ProviderEvent:
        return parse_voucher_event(payload)
