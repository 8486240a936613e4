"""Access and erasure span domains: the record is beneficiaries', the money entitlements', the trail
audit's. Each is asked through its own service; only beneficiaries changes its rows."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.audit.schemas import AuditEventOut
from cbi_service.audit.service import Actor, events_about_beneficiary
from cbi_service.beneficiaries import service as beneficiaries
from cbi_service.beneficiaries.schemas import BeneficiaryOut
from cbi_service.entitlements import service as entitlements
from cbi_service.kit.errors import Conflict
from cbi_service.privacy.schemas import EnrolmentOut, PersonalDataOut

RETENTION_BATCH = 500


async def personal_data(session: AsyncSession, beneficiary_id: uuid.UUID) -> PersonalDataOut:
    record = await beneficiaries.out_one(session, await beneficiaries.get(session, beneficiary_id))
    return PersonalDataOut(
        record=record,
        enrolments=[EnrolmentOut(**e) for e in await beneficiaries.enrolments_of(session, beneficiary_id)],
        entitlements=await entitlements.of_beneficiary(session, beneficiary_id),
        audit_events=[AuditEventOut.model_validate(e) for e in await events_about_beneficiary(session, beneficiary_id)],
    )


async def erase(session: AsyncSession, actor: Actor | None, beneficiary_id: uuid.UUID, reason: str) -> BeneficiaryOut:
    """Erase a person's personal data; 409 while one of their entitlements is pending or submitted (the row
    lock keeps a batch from paying them meanwhile). Erasing an erased person changes nothing."""
    beneficiary = await beneficiaries.lock(session, beneficiary_id)
    if beneficiary.status != "erased":
        if await entitlements.can_still_move(session, beneficiary_id):
            raise Conflict("This person has an entitlement pending or submitted: erase their data once it is settled.")
        await beneficiaries.erase_locked(session, actor, beneficiary, reason)
    return await beneficiaries.out_one(session, beneficiary)


async def erase_expired(session: AsyncSession, retention_days: int, now: datetime | None = None) -> int:
    """One batch of the retention job: people inactive for `retention_days` erased, each audited."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    people = await beneficiaries.inactive_since(session, cutoff, RETENTION_BATCH)
    reason = f"retention: no activity for {retention_days} days"
    for beneficiary_id in people:
        await beneficiaries.erase_locked(session, None, await beneficiaries.lock(session, beneficiary_id), reason)
    return len(people)
