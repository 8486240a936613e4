"""Programmes: the budget and delivery settings every batch of payments runs under, and their funding.

A programme's money is kept by accounting (its chart of accounts in the ledger); this service looks the
programme up and hands it to accounting, which never reads the programmes table itself. Whether a provider
can serve a programme is issuance's to say (`when_provider_chosen`). Enrolments are beneficiaries' table:
this service looks the programme up and beneficiaries enrols into it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.accounting import service as accounting
from cbi_service.audit.service import record_audit
from cbi_service.auth.roles import Principal
from cbi_service.beneficiaries import service as beneficiaries
from cbi_service.beneficiaries.schemas import EnrolmentRequest, EnrolmentResult
from cbi_service.kit.errors import NotFound, UnprocessableEntity
from cbi_service.kit.money import Money, require_currency
from cbi_service.kit.settings import Settings
from cbi_service.programmes.models import Programme
from cbi_service.programmes.repository import ProgrammeRepository
from cbi_service.programmes.schemas import (
    REPORTING_FIELDS,
    REQUIRED_REPORTING_FIELDS,
    FundingCreate,
    FundingOut,
    ProgrammeBalancesOut,
    ProgrammeCreate,
    ProgrammeOut,
    ReportingPatch,
)

ProviderCheck = Callable[[Settings, str, str], None]
_provider_checks: list[ProviderCheck] = []


def when_provider_chosen(check: ProviderCheck) -> None:
    """Have `check(settings, provider, delivery_mechanism)` vet a new programme's provider before it is stored,
    raising `UnprocessableEntity`: `issuance`, which wires the provider adapters, does so (it imports this
    domain, so this one cannot import it back)."""
    _provider_checks.append(check)


async def create_programme(
    session: AsyncSession, settings: Settings, principal: Principal, data: ProgrammeCreate
) -> ProgrammeOut:
    if not _provider_checks:
        raise RuntimeError("no provider check registered: cbi_service.issuance.providers is not loaded")
    for check in _provider_checks:
        check(settings, data.provider, data.delivery_mechanism.value)
    programme = await ProgrammeRepository(session).add(
        Programme(
            name=data.name,
            country=data.country,
            currency=data.currency,
            sector=data.sector.value,
            delivery_mechanism=data.delivery_mechanism.value,
            provider=data.provider,
            approvals_required=data.approvals_required,
            approval_bands=data.bands_minor(),
            voucher_validity_days=data.voucher_validity_days,
            **data.model_dump(include=set(REPORTING_FIELDS)),
            created_by=principal.id,
        )
    )
    await accounting.open_programme_accounts(session, programme)
    out = ProgrammeOut.of(programme)
    await record_audit(
        session, principal, "programme.created", "programme", programme.id, None, out.model_dump(mode="json")
    )
    return out


async def change_reporting_identity(
    session: AsyncSession, principal: Principal, programme_id: uuid.UUID, patch: ReportingPatch
) -> ProgrammeOut:
    """Set or correct how the programme appears in the 5W, audited with the identity before and after. The
    5W is computed when it is asked for, so a correction shows in every month's report from then on."""
    changes = patch.model_dump(exclude_unset=True)
    if cleared := [name for name in REQUIRED_REPORTING_FIELDS if name in changes and changes[name] is None]:
        raise UnprocessableEntity(
            "A 5W row cannot be filed without this field.",
            errors=[{"field": name, "message": "must not be null"} for name in cleared],
        )
    programme = await get_programme(session, programme_id, for_update=True)
    before = {name: getattr(programme, name) for name in REPORTING_FIELDS}
    for name, value in changes.items():
        setattr(programme, name, value)
    await session.flush()
    after = {name: getattr(programme, name) for name in REPORTING_FIELDS}
    await record_audit(
        session, principal, "programme.reporting_identity_changed", "programme", programme.id, before, after
    )
    return ProgrammeOut.of(programme)


async def get_programme(session: AsyncSession, programme_id: uuid.UUID, *, for_update: bool = False) -> Programme:
    programme = await ProgrammeRepository(session).get(programme_id, for_update=for_update)
    if programme is None:
        raise NotFound("Programme not found.")
    return programme


async def list_programmes(
    session: AsyncSession, *, after_id: uuid.UUID | None, limit: int, country: str | None, sector: str | None
) -> Sequence[Programme]:
    return await ProgrammeRepository(session).list(after_id=after_id, limit=limit, country=country, sector=sector)


async def programme_balances(session: AsyncSession, programme_id: uuid.UUID) -> ProgrammeBalancesOut:
    programme = await get_programme(session, programme_id)
    return ProgrammeBalancesOut.of(programme.id, await accounting.programme_balances(session, programme))


async def enrol(
    session: AsyncSession, principal: Principal, programme_id: uuid.UUID, body: EnrolmentRequest
) -> EnrolmentResult:
    """Enrol beneficiaries in an existing programme (404 if there is none)."""
    return await beneficiaries.enrol(session, principal, await get_programme(session, programme_id), body)


async def fund_programme(
    session: AsyncSession, principal: Principal, programme_id: uuid.UUID, body: FundingCreate, request_key: str
) -> FundingOut:
    """Donor money to the programme's `available` balance, audited with the balances before and after."""
    programme = await get_programme(session, programme_id)
    amount = require_currency(body.amount, programme.currency)
    accounts = await accounting.programme_accounts(session, programme)
    before = await accounting.programme_balances(session, programme)
    tx = await accounting.fund(
        session,
        programme,
        amount,
        source=body.source,
        reference=body.reference,
        request_key=f"{principal.id}:{request_key}",
        accounts=accounts,
    )
    after = await accounting.programme_balances(session, programme)
    out = FundingOut(
        transaction_id=tx.id,
        programme_id=programme.id,
        amount=Money.of(amount, programme.currency),
        source=body.source,
        reference=body.reference,
        posted_at=tx.posted_at,
        balances=ProgrammeBalancesOut.of(programme.id, after),
    )
    await record_audit(
        session,
        principal,
        "programme.funded",
        "programme",
        programme.id,
        {"funded": before.funded, "available": before.available},
        {
            "funded": after.funded,
            "available": after.available,
            "amount_minor": amount,
            "currency": programme.currency,
            "source": body.source,
            "reference": body.reference,
            "transaction_id": str(tx.id),
        },
    )
    return out
