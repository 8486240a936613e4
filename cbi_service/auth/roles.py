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
    merchant = "merchant"
    """A shop that accepts paper vouchers: its key is bound to that merchant and holds no other role."""


STAFF_ROLES: frozenset[Role] = frozenset(Role) - {Role.merchant}
"""The agency's own people: "any staff role" of contract §2; merchants are not among them."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key's id (the idempotency and audit scope), its name and roles, and for a
    merchant's key the merchant it acts for."""

    id: uuid.UUID
    name: str
    roles: frozenset[Role]
    merchant_id: uuid.UUID | None = None

    def has_any(self, roles: frozenset[Role]) -> bool:
        return bool(self.roles & roles)
