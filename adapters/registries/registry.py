"""CBI_REGISTRIES entries -> registry adapters: the built-ins plus adapters installed by other packages.

A package declares one under the entry-point group `cbi_service.registries` (see `adapters.plugins`),
with a factory `build(name, config)` that returns a `RegistryAdapter`; a CBI_REGISTRIES entry selects it
by its name in `"adapter"`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from adapters.plugins import PluginKind
from adapters.registries.base import RegistryAdapter, RegistryConfigError
from adapters.registries.dci import DciRegistry
from adapters.registries.hashed_list import HashedListRegistry

ENTRY_POINT_GROUP = "cbi_service.registries"

REGISTRY_ADAPTERS = PluginKind[RegistryAdapter](
    noun="registry",
    group=ENTRY_POINT_GROUP,
    builtins=MappingProxyType({"dci": DciRegistry.from_config, "hashed_list": HashedListRegistry.from_config}),
    interface=RegistryAdapter,
    error=RegistryConfigError,
)


def build_registries(configs: Mapping[str, Mapping[str, Any]]) -> list[RegistryAdapter]:
    """Every configured registry; a misconfiguration is a `RegistryConfigError` at start-up, not mid-request."""
    return [REGISTRY_ADAPTERS.build(name, config) for name, config in configs.items()]
