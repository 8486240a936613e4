"""Programmes: the budget and delivery settings every batch of payments runs under."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.accounting.service import open_programme_accounts
from cbi_service.audit.service import record_audit
from cbi_service.auth.roles import Principal
from cbi_service.kit.errors import NotFound, UnprocessableEntity
from cbi_service.kit.settings import Settings
from cbi_service.programmes.models import Programme
from cbi_service.programmes.repository import ProgrammeRepository
from cbi_service.programmes.schemas import ProgrammeCreate, ProgrammeOut


def _check_provider(settings: Settings, data: ProgrammeCreate) -> None:
    provider = settings.providers.get(data.provider)
    if provider is None:
        raise UnprocessableEntity(
            "Unknown provider.", errors=[{"field": "provider", "message": "not a configured provider"}]
        )
    adapter = provider.get("adapter")
    if adapter in {"prepaid_card", "voucher"} and adapter != data.delivery_mechanism.value:
        raise UnprocessableEntity(
            "Provider does not deliver this mechanism.",
            errors=[{"field": "delivery_mechanism", "message": f"provider {data.provider!r} delivers {adapter}"}],
        )


async def create_programme(
    session: AsyncSession, settings: Settings, principal: Principal, data: ProgrammeCreate
) -> ProgrammeOut:
    _check_provider(settings, data)
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
            created_by=principal.id,
        )
    )
    await open_programme_accounts(session, programme)
    out = ProgrammeOut.of(programme)
    await record_audit(
        session, principal, "programme.created", "programme", programme.id, None, out.model_dump(mode="json")
    )
    return out


async def get_programme(session: AsyncSession, programme_id: uuid.UUID, *, for_update: bool = False) -> Programme:
    programme = await ProgrammeRepository(session).get(programme_id, for_update=for_update)
    if programme is None:
        raise NotFound("Programme not found.")
    return programme


async def list_programmes(
    session: AsyncSession, *, after_id: uuid.UUID | None, limit: int, country: str | None, sector: str | None
) -> Sequence[Programme]:
    return await ProgrammeRepository(session).list(after_id=after_id, limit=limit, country=country, sector=sector)
