"""Maker-checker decisions as the API shows them: batches and merchant settlements record them alike."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel


class Decision(Protocol):
    """A stored approver's decision (a domain's approvals row)."""

    @property
    def approver_id(self) -> uuid.UUID: ...
    @property
    def approver_name(self) -> str: ...
    @property
    def decision(self) -> str: ...
    @property
    def comment(self) -> str | None: ...
    @property
    def created_at(self) -> datetime: ...


class ApprovalOut(BaseModel):
    approver_id: uuid.UUID
    approver_name: str
    decision: str
    comment: str | None
    at: datetime

    @classmethod
    def of(cls, row: Decision) -> ApprovalOut:
        return cls(
            approver_id=row.approver_id,
            approver_name=row.approver_name,
            decision=row.decision,
            comment=row.comment,
            at=row.created_at,
        )
