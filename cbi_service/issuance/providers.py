"""The providers a programme may name: the built-in ones and CBI_PROVIDERS', their adapters built through the
adapters registry once per event loop, the check that a new programme names a provider able to serve it
(handed to `programmes` at import), and the listing behind `GET /v1/providers`.

An adapter owns an HTTP connection pool bound to the loop that created it, so the cache is keyed by the
running loop: a process builds each provider once (per loop) and reuses its pool for every call.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from adapters.providers.base import ProviderAdapter, ProviderConfigError
from adapters.providers.registry import build_provider
from cbi_service.issuance.schemas import ProviderOut
from cbi_service.kit.errors import Conflict, UnprocessableEntity
from cbi_service.kit.settings import Settings
from cbi_service.programmes.service import when_provider_chosen

#: Providers every deployment has, whatever CBI_PROVIDERS says: name → config. The one place a built-in
#: provider is added; the agency's own paper vouchers (§14) join as `"paper_voucher": {"adapter":
#: "paper_voucher"}` together with that adapter.
BUILTIN_PROVIDERS: Mapping[str, Mapping[str, Any]] = MappingProxyType({})

_CACHE: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], ProviderAdapter]] = (
    weakref.WeakKeyDictionary()
)


def provider_configs(settings: Settings) -> dict[str, Mapping[str, Any]]:
    """Every provider of this deployment by name: CBI_PROVIDERS' entries and the built-in ones."""
    return {**settings.providers, **BUILTIN_PROVIDERS}


def check_provider_names(settings: Settings) -> None:
    """A CBI_PROVIDERS entry may not take a built-in provider's name (start-up refuses it)."""
    taken = sorted(BUILTIN_PROVIDERS.keys() & settings.providers.keys())
    if taken:
        raise ProviderConfigError(f"provider {taken[0]!r} is built in: give that entry another name")


def get_provider(settings: Settings, name: str) -> ProviderAdapter:
    """The adapter of provider `name`; a programme naming a provider no longer configured is a 409."""
    config = provider_configs(settings).get(name)
    if config is None:
        raise Conflict(f"Provider {name!r} is not configured.")
    key = (name, json.dumps(config, sort_keys=True, default=str))
    adapters = _CACHE.setdefault(asyncio.get_running_loop(), {})
    adapter = adapters.get(key)
    if adapter is None:
        adapter = adapters[key] = build_provider(name, config)
    return adapter


async def close_providers() -> None:
    """Close this loop's adapters (their connection pools); the next call builds them again."""
    adapters = _CACHE.pop(asyncio.get_running_loop(), {})
    for adapter in adapters.values():
        await adapter.aclose()


def delivery_mechanisms(settings: Settings, name: str) -> list[str]:
    """What provider `name` delivers, as its adapter declares it."""
    return [get_provider(settings, name).delivery_mechanism]


def check_provider(settings: Settings, provider: str, delivery_mechanism: str) -> None:
    """A programme's provider must be configured, and deliver the programme's mechanism (a 422 otherwise)."""
    if provider not in provider_configs(settings):
        raise UnprocessableEntity(
            "Unknown provider.", errors=[{"field": "provider", "message": "not a configured provider"}]
        )
    delivers = delivery_mechanisms(settings, provider)
    if delivery_mechanism not in delivers:
        raise UnprocessableEntity(
            "Provider does not deliver this mechanism.",
            errors=[
                {"field": "delivery_mechanism", "message": f"provider {provider!r} delivers {' and '.join(delivers)}"}
            ],
        )


def list_providers(settings: Settings) -> list[ProviderOut]:
    """The providers by name, with their adapter and mechanisms: never a secret, a URL or another option."""
    return [
        ProviderOut(name=name, adapter=str(config["adapter"]), delivery_mechanisms=delivery_mechanisms(settings, name))
        for name, config in sorted(provider_configs(settings).items())
    ]


when_provider_chosen(check_provider)
