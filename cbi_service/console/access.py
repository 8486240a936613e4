"""Who opens which console page: the roles of the API routes each page stands for (contract §2), so the
console admits exactly whom the API admits, and the navigation lists only what the visitor may open."""

from __future__ import annotations

from dataclasses import dataclass

from cbi_service.auth.roles import STAFF_ROLES, Role
from cbi_service.console.i18n import N_

ANY_STAFF = tuple(role for role in Role if role in STAFF_ROLES)
APPROVE = (Role.approver,)
RELEASE = (Role.finance,)
LEDGER = (Role.auditor, Role.finance, Role.admin)
AUDIT = (Role.auditor, Role.admin)
ADJUDICATIONS = (Role.registrar, Role.admin, Role.auditor)
DECIDE = (Role.registrar, Role.admin)
IMPORTS = (Role.registrar, Role.admin, Role.auditor)
UPLOAD = (Role.registrar,)
VERIFY = (Role.auditor, Role.finance)
FIVE_W = (Role.programme_officer, Role.finance, Role.auditor)


@dataclass(frozen=True)
class NavItem:
    path: str
    label: str
    roles: frozenset[Role]


NAVIGATION = (
    NavItem("/console/batches", N_("Payment batches"), frozenset(ANY_STAFF)),
    NavItem("/console/adjudications", N_("Possible duplicates"), frozenset(ADJUDICATIONS)),
    NavItem("/console/imports", N_("Imports"), frozenset(IMPORTS)),
    NavItem("/console/programmes", N_("Balances"), frozenset(ANY_STAFF)),
    NavItem("/console/ledger/trial-balance", N_("Trial balance"), frozenset(LEDGER)),
    NavItem("/console/reports/people-reached", N_("People reached"), frozenset(ANY_STAFF)),
    NavItem("/console/reports/5w", N_("5W report"), frozenset(FIVE_W)),
    NavItem("/console/audit-events", N_("Audit trail"), frozenset(AUDIT)),
    NavItem("/console/ledger/verify", N_("Verify an export"), frozenset(VERIFY)),
)
