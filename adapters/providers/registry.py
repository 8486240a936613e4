"""Which adapter serves which provider: the built-ins plus adapters installed by other packages.

A package declares one under the entry-point group `cbi_service.providers` (see `adapters.plugins`), with
a factory `build(name, config)` that returns a `ProviderAdapter`; a CBI_PROVIDERS entry selects it by
its name in `"adapter"`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from adapters.plugins import PluginKind
from adapters.providers.base import ProviderAdapter, ProviderConfigError
from adapters.providers.g2p_connect import G2PConnectAdapter
from adapters.providers.prepaid_card import PrepaidCardAdapter
from adapters.providers.voucher import VoucherAdapter

ENTRY_POINT_GROUP = "cbi_service.providers"

PROVIDER_ADAPTERS = PluginKind[ProviderAdapter](
    noun="provider",
    group=ENTRY_POINT_GROUP,
    builtins=MappingProxyType(
        {
            "prepaid_card": PrepaidCardAdapter.from_config,
            "voucher": VoucherAdapter.from_config,
            "g2p_connect": G2PConnectAdapter.from_config,
        }
    ),
    interface=ProviderAdapter,
    error=ProviderConfigError,
)


def available_adapters() -> list[str]:
    """Adapter kinds a CBI_PROVIDERS entry may name, installed packages included."""
    return PROVIDER_ADAPTERS.available()


def build_provider(name: str, config: Mapping[str, Any]) -> ProviderAdapter:
    """One CBI_PROVIDERS entry → its adapter; every misconfiguration is a `ProviderConfigError`."""
    return PROVIDER_ADAPTERS.build(name, config)


def build_providers(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, ProviderAdapter]:
    """The whole CBI_PROVIDERS mapping, validated at once so a bad entry stops startup."""
    return {name: build_provider(name, config) for name, config in configs.items()}
