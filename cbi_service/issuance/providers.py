"""Provider adapters built from CBI_PROVIDERS through the adapters registry, one set per event loop, and the
check that a new programme names a provider able to serve it (handed to `programmes` at import).

An adapter owns an HTTP connection pool bound to the loop that created it, so the cache is keyed by the
running loop: a process builds each provider once (per loop) and reuses its pool for every call.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from typing import Any

from pydantic import SecretStr

from adapters.providers.base import ProviderAdapter
from adapters.providers.registry import build_provider
from cbi_service.kit.errors import Conflict, UnprocessableEntity
from cbi_service.kit.settings import Settings
from cbi_service.programmes.service import when_provider_chosen

#: Adapters that deliver one mechanism only; a programme naming one of them must deliver that mechanism.
SINGLE_MECHANISM_ADAPTERS = frozenset({"prepaid_card", "voucher"})

_CACHE: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], ProviderAdapter]] = (
    weakref.WeakKeyDictionary()
)


def get_provider(settings: Settings, name: str) -> ProviderAdapter:
    """The adapter configured as `name`; a programme naming a provider no longer configured is a 409."""
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


def check_provider(settings: Settings, provider: str, delivery_mechanism: str) -> None:
    """A programme's provider must be configured, and deliver the programme's mechanism (a 422 otherwise)."""
    config = settings.providers.get(provider)
    if config is None:
        raise UnprocessableEntity(
            "Unknown provider.", errors=[{"field": "provider", "message": "not a configured provider"}]
        )
    adapter = config.get("adapter")
    if adapter in SINGLE_MECHANISM_ADAPTERS and adapter != delivery_mechanism:
        raise UnprocessableEntity(
            "Provider does not deliver this mechanism.",
            errors=[{"field": "delivery_mechanism", "message": f"provider {provider!r} delivers {adapter}"}],
        )


when_provider_chosen(check_provider)
