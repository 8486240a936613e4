"""Which adapter serves which provider: the built-ins plus adapters installed by other packages.

A third-party package declares, in its metadata,

    [project.entry-points."cbi_service.providers"]
    mobile_money = "acme_cbi.adapter:build"

where `build(name, config)` returns a `ProviderAdapter`; a CBI_PROVIDERS entry then selects it with
`"adapter": "mobile_money"`. Built-in names cannot be overridden, so installing a package never silently
changes where money goes.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any, Protocol

from adapters.providers.base import ProviderAdapter, ProviderConfigError
from adapters.providers.prepaid_card import PrepaidCardAdapter
from adapters.providers.voucher import VoucherAdapter

ENTRY_POINT_GROUP = "cbi_service.providers"


class AdapterFactory(Protocol):
    def __call__(self, name: str, config: Mapping[str, Any], /) -> ProviderAdapter: ...


BUILTIN_ADAPTERS: Mapping[str, AdapterFactory] = MappingProxyType(
    {"prepaid_card": PrepaidCardAdapter.from_config, "voucher": VoucherAdapter.from_config}
)


def available_adapters() -> list[str]:
    """Adapter kinds a CBI_PROVIDERS entry may name, installed packages included."""
    return sorted(set(BUILTIN_ADAPTERS) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def adapter_factory(adapter: str) -> AdapterFactory:
    builtin = BUILTIN_ADAPTERS.get(adapter)
    if builtin is not None:
        return builtin
    found = {ep.value: ep for ep in entry_points(group=ENTRY_POINT_GROUP, name=adapter)}
    if not found:
        raise ProviderConfigError(f"unknown provider adapter {adapter!r}; available: {', '.join(available_adapters())}")
    if len(found) > 1:
        raise ProviderConfigError(
            f"provider adapter {adapter!r} is declared by several packages: {', '.join(sorted(found))}"
        )
    (entry_point,) = found.values()
    try:
        factory = entry_point.load()
    except Exception as exc:
        raise ProviderConfigError(f"provider adapter {adapter!r} ({entry_point.value}) failed to load: {exc}") from exc
    if not callable(factory):
        raise ProviderConfigError(f"provider adapter {adapter!r} ({entry_point.value}) is not callable")
    factory_: AdapterFactory = factory
    return factory_


def build_provider(name: str, config: Mapping[str, Any]) -> ProviderAdapter:
    """One CBI_PROVIDERS entry → its adapter; every misconfiguration is a `ProviderConfigError`."""
    adapter = config.get("adapter")
    if not isinstance(adapter, str) or not adapter:
        raise ProviderConfigError(f"provider {name!r}: 'adapter' must name an adapter kind")
    provider = adapter_factory(adapter)(name, config)
    if not isinstance(provider, ProviderAdapter):
        raise ProviderConfigError(
            f"provider {name!r}: adapter {adapter!r} built a {type(provider).__name__}, not a ProviderAdapter"
        )
    return provider


def build_providers(configs: Mapping[str, Mapping[str, Any]]) -> dict[str, ProviderAdapter]:
    """The whole CBI_PROVIDERS mapping, validated at once so a bad entry stops startup."""
    return {name: build_provider(name, config) for name, config in configs.items()}
