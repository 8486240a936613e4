"""CBI_REGISTRIES entries -> registry adapters: the built-ins plus adapters installed by other packages.

A third-party package declares

    [project.entry-points."cbi_service.registries"]
    remote_http = "acme_registry.adapter:build"

where `build(name, config)` returns a `RegistryAdapter`; a CBI_REGISTRIES entry selects it with
`"adapter": "remote_http"`. Built-in names cannot be overridden by an installed package.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any

from adapters.registries.base import RegistryAdapter, RegistryConfigError
from adapters.registries.hashed_list import HashedListRegistry

ENTRY_POINT_GROUP = "cbi_service.registries"

RegistryFactory = Callable[[str, Mapping[str, Any]], RegistryAdapter]

BUILTIN_REGISTRIES: Mapping[str, RegistryFactory] = MappingProxyType({"hashed_list": HashedListRegistry.from_config})


def registry_factory(adapter: str) -> RegistryFactory:
    builtin = BUILTIN_REGISTRIES.get(adapter)
    if builtin is not None:
        return builtin
    found = list(entry_points(group=ENTRY_POINT_GROUP, name=adapter))
    if len(found) != 1:
        problem = "is declared by several packages" if found else "is not installed"
        raise RegistryConfigError(f"registry adapter {adapter!r} {problem}")
    try:
        factory = found[0].load()
    except Exception as exc:
        raise RegistryConfigError(f"registry adapter {adapter!r} failed to load: {exc}") from exc
    if not callable(factory):
        raise RegistryConfigError(f"registry adapter {adapter!r} is not callable")
    built: RegistryFactory = factory
    return built


def build_registries(configs: Mapping[str, Mapping[str, Any]]) -> list[RegistryAdapter]:
    """Every configured registry; a misconfiguration is a `RegistryConfigError` at start-up, not mid-request."""
    registries: list[RegistryAdapter] = []
    for name, config in configs.items():
        adapter = config.get("adapter")
        if not isinstance(adapter, str) or not adapter:
            raise RegistryConfigError(f"registry {name!r}: 'adapter' must name an adapter kind")
        registry = registry_factory(adapter)(name, config)
        if not isinstance(registry, RegistryAdapter):
            raise RegistryConfigError(f"registry {name!r}: adapter {adapter!r} did not build a RegistryAdapter")
        registries.append(registry)
    return registries
