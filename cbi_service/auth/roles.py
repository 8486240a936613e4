"""Roles and the caller's identity."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    admin = "admin"
    registrar = "registrar"
    programme_officer = "programme_officer"
    approver = "approver"
    finance = "finance"
    auditor = "auditor"


ALL_ROLES: frozenset[Role] = frozenset(Role)


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key's id (the idempotency and audit scope), its name and roles."""

    id: uuid.UUID
    name: str
    roles: frozenset[Role]

    def has_any(self, roles: frozenset[Role]) -> bool:
        return bool(self.roles & roles)
