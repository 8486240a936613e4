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
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pydantic import SecretStr

from adapters.providers.base import ProviderAdapter, ProviderConfigError
from adapters.providers.registry import build_provider
from cbi_service.issuance.schemas import ProviderOut
from cbi_service.kit.errors import Conflict, UnprocessableEntity
from cbi_service.kit.settings import Settings
from cbi_service.programmes.service import when_provider_chosen
from cbi_service.vouchers import provider as paper_voucher


@dataclass(frozen=True)
class BuiltinProvider:
    """A provider always available under its name, built from the settings rather than a CBI_PROVIDERS entry.

    It delivers one mechanism, and that mechanism is delivered by it alone."""

    adapter: str
    delivery_mechanism: str
    build: Callable[[Settings], ProviderAdapter]


#: Providers every deployment has, whatever CBI_PROVIDERS says: the one place a built-in provider is added.
BUILTIN_PROVIDERS = MappingProxyType(
    {
        paper_voucher.NAME: BuiltinProvider(
            "paper_voucher", "paper_voucher", paper_voucher.PaperVoucherProvider.from_settings
        )
    }
)
BUILTIN_MECHANISMS = {builtin.delivery_mechanism: name for name, builtin in BUILTIN_PROVIDERS.items()}

_CACHE: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], ProviderAdapter]] = (
    weakref.WeakKeyDictionary()
)


def check_provider_names(settings: Settings) -> None:
    """A CBI_PROVIDERS entry may not take a built-in provider's name (start-up refuses it)."""
    taken = sorted(BUILTIN_PROVIDERS.keys() & settings.providers.keys())
    if taken:
        raise ProviderConfigError(f"provider {taken[0]!r} is built in: give that entry another name")


def get_provider(settings: Settings, name: str) -> ProviderAdapter:
    """The built-in provider or the adapter configured as `name`; a programme naming a provider no longer
    configured is a 409. (A built-in holds no connection pool: it is built for each call.)"""
    builtin = BUILTIN_PROVIDERS.get(name)
    if builtin is not None:
        return builtin.build(settings)
    config = settings.providers.get(name)
    if config is None:
        raise Conflict(f"Provider {name!r} is not configured.")
    key = (name, json.dumps(config, sort_keys=True, default=_plain))
    adapters = _CACHE.setdefault(asyncio.get_running_loop(), {})
    adapter = adapters.get(key)
    if adapter is None:
        adapter = adapters[key] = build_provider(name, config)
    return adapter


def _plain(value: Any) -> str:
    """Secrets as they are, so that an entry whose secret changed is a new adapter, not the cached one."""
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


async def close_providers() -> None:
    """Close this loop's adapters (their connection pools); the next call builds them again."""
    adapters = _CACHE.pop(asyncio.get_running_loop(), {})
    for adapter in adapters.values():
        await adapter.aclose()


def delivery_mechanisms(settings: Settings, name: str) -> list[str]:
    """What provider `name` delivers, as its adapter declares it."""
    builtin = BUILTIN_PROVIDERS.get(name)
    if builtin is not None:
        return [builtin.delivery_mechanism]
    return [get_provider(settings, name).delivery_mechanism]


def check_provider(settings: Settings, provider: str, delivery_mechanism: str) -> None:
    """A programme's provider must be built in or configured, and deliver the programme's mechanism (a 422
    otherwise); a mechanism a built-in provider delivers is delivered by that one only."""
    if provider not in BUILTIN_PROVIDERS and provider not in settings.providers:
        raise UnprocessableEntity(
            "Unknown provider.", errors=[{"field": "provider", "message": "not a configured provider"}]
        )
    if provider not in BUILTIN_PROVIDERS and delivery_mechanism in BUILTIN_MECHANISMS:
        message = (
            f"{delivery_mechanism} is delivered by the built-in provider {BUILTIN_MECHANISMS[delivery_mechanism]!r}"
        )
        raise UnprocessableEntity(
            "Provider does not deliver this mechanism.", errors=[{"field": "provider", "message": message}]
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
    adapters = {name: str(config["adapter"]) for name, config in settings.providers.items()}
    adapters.update((name, builtin.adapter) for name, builtin in BUILTIN_PROVIDERS.items())
    return [
        ProviderOut(name=name, adapter=adapter, delivery_mechanisms=delivery_mechanisms(settings, name))
        for name, adapter in sorted(adapters.items())
    ]


when_provider_chosen(check_provider)
