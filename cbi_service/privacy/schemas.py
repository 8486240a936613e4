from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from cbi_service.audit.schemas import AuditEventOut
from cbi_service.beneficiaries.schemas import BeneficiaryOut
from cbi_service.entitlements.schemas import EntitlementOut


class ErasureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        min_length=1, max_length=500, description="Why (kept in the audit trail): write no personal data here."
    )


class EnrolmentOut(BaseModel):
    programme_id: uuid.UUID
    enrolled_at: datetime
    enrolled_by: uuid.UUID


class PersonalDataOut(BaseModel):
    """Everything held about one person: their record (consent included), enrolments, entitlements, and
    every audit event about them: who registered, corrected, decided on or viewed them."""

    record: BeneficiaryOut
    enrolments: list[EnrolmentOut]
    entitlements: list[EntitlementOut]
    audit_events: list[AuditEventOut]
