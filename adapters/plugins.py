"""Adapters chosen by name in the configuration: the built-ins plus those that installed packages declare.

A third-party package declares its adapter factory as an entry point of the kind's group, for instance

    [project.entry-points."cbi_service.providers"]
    mobile_money = "acme_cbi.adapter:build"

where `build(name, config)` returns the adapter; a configuration entry then selects it with
`"adapter": "mobile_money"`. Built-in names cannot be overridden, so installing a package never silently
changes where money goes or which registry a beneficiary is checked against. Options that hold secrets
(`api_key`, `webhook_secret`, …) reach the factory as pydantic `SecretStr`: `get_secret_value()` reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

Adapter = TypeVar("Adapter")


@dataclass(frozen=True)
class PluginKind(Generic[Adapter]):
    """One kind of adapter: its built-in factories, its entry-point group and the error it reports."""

    noun: str
    group: str
    builtins: Mapping[str, Callable[[str, Mapping[str, Any]], Adapter]]
    #: What every factory must build, checked at start-up (a protocol, so not `type[Adapter]`).
    interface: type
    error: type[Exception]

    def available(self) -> list[str]:
        """Adapter names a configuration entry may use, installed packages included."""
        return sorted(set(self.builtins) | {ep.name for ep in entry_points(group=self.group)})

    def factory(self, adapter: str) -> Callable[[str, Mapping[str, Any]], Adapter]:
        builtin = self.builtins.get(adapter)
        if builtin is not None:
            return builtin
        found = {ep.value: ep for ep in entry_points(group=self.group, name=adapter)}
        if not found:
            raise self.error(f"unknown {self.noun} adapter {adapter!r}; available: {', '.join(self.available())}")
        if len(found) > 1:
            raise self.error(
                f"{self.noun} adapter {adapter!r} is declared by several packages: {', '.join(sorted(found))}"
            )
        (entry_point,) = found.values()
        try:
            factory = entry_point.load()
        except Exception as exc:
            raise self.error(f"{self.noun} adapter {adapter!r} ({entry_point.value}) failed to load: {exc}") from exc
        if not callable(factory):
            raise self.error(f"{self.noun} adapter {adapter!r} ({entry_point.value}) is not callable")
        loaded: Callable[[str, Mapping[str, Any]], Adapter] = factory
        return loaded

    def check(self, name: str, config: Mapping[str, Any]) -> Callable[[str, Mapping[str, Any]], Adapter]:
        """The factory a configuration entry names, without building anything: for start-up checks."""
        adapter = config.get("adapter")
        if not isinstance(adapter, str) or not adapter:
            raise self.error(
                f"{self.noun} {name!r}: 'adapter' must name an adapter kind; available: {', '.join(self.available())}"
            )
        return self.factory(adapter)

    def build(self, name: str, config: Mapping[str, Any]) -> Adapter:
        """One configuration entry → its adapter; every misconfiguration is this kind's error."""
        adapter = config.get("adapter")
        built = self.check(name, config)(name, config)
        if not isinstance(built, self.interface):
            raise self.error(
                f"{self.noun} {name!r}: adapter {adapter!r} built a {type(built).__name__},"
                f" not a {self.interface.__name__}"
            )
        return built
