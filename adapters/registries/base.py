"""The registry adapter interface: how dedup asks another agency's registry whether it knows a person.

The probe carries only canonical values (folded name tokens, their Spanish phonetic codes, canonical document
numbers, E.164 phone) computed by the service, so every adapter compares like with like without importing
the service's normalisation code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Protocol, runtime_checkable


class RegistryConfigError(ValueError):
    """A CBI_REGISTRIES entry that cannot be turned into an adapter."""


class RegistryUnavailable(Exception):
    """A registry that could not answer a check (down, slow, refusing, answering nonsense). Its message names
    the registry and what went wrong, never the person asked about. Dedup reports the registry `unavailable`
    for any exception an adapter raises; this is the one the built-ins raise."""


@dataclass(frozen=True, slots=True)
class RegistryDocument:
    type: str
    country: str
    number: str


@dataclass(frozen=True, slots=True)
class RegistryProbe:
    """The person being registered, normalised."""

    given: tuple[str, ...]
    family: tuple[str, ...]
    given_phonetic: tuple[str, ...]
    family_phonetic: tuple[str, ...]
    date_of_birth: date
    sex: str = "unknown"
    nationality: str | None = None
    documents: tuple[RegistryDocument, ...] = ()
    phone: str | None = None


@dataclass(frozen=True, slots=True)
class RegistryMatch:
    """A person the registry knows; `same_document` means the same document of the same type and country."""

    registry: str
    registry_ref: str
    score: float
    matched_on: list[str] = field(default_factory=list)
    same_document: bool = False


@runtime_checkable
class RegistryAdapter(Protocol):
    name: str

    async def check(self, probe: RegistryProbe) -> list[RegistryMatch]: ...
