"""A key rotation's progress: how many sealed rows it found and how many it has sealed again."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from cbi_service.kit.ids import new_id
from cbi_service.kit.models import Base, CreatedAt, one_of

ROTATION_STATUSES = ("running", "completed")


class KeyRotation(CreatedAt, Base):
    """One rotation to `to_version`; at most one runs at a time (partial unique index)."""

    __tablename__ = "key_rotations"
    __table_args__ = (
        CheckConstraint(one_of("status", ROTATION_STATUSES), name="status"),
        Index("uq_key_rotations_running", "status", unique=True, postgresql_where=text("status = 'running'")),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    status: Mapped[str] = mapped_column(String(10), server_default="running")
    to_version: Mapped[int] = mapped_column(ForeignKey("crypto_keys.version"))
    total: Mapped[int] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer, server_default="0")
    created_by: Mapped[uuid.UUID | None] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
