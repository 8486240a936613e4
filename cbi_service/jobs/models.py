from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, Index, Integer, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from cbi_service.kit.ids import new_id
from cbi_service.kit.models import Base, CreatedAt

JOB_STATUSES = ("queued", "running", "done", "failed")


class Job(CreatedAt, Base):
    """A unit of background work. Enqueued inside the caller's transaction, so it exists only if that commits."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint("status IN ('queued','running','done','failed')", name="status"),
        CheckConstraint("attempts >= 0 AND max_attempts >= 1", name="attempts"),
        Index("ix_jobs_ready", "run_at", postgresql_where=text("status IN ('queued','running')")),
        Index(
            "uq_jobs_dedupe_key_live",
            "dedupe_key",
            unique=True,
            postgresql_where=text("dedupe_key IS NOT NULL AND status IN ('queued','running')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(10), server_default="queued")
    dedupe_key: Mapped[str | None] = mapped_column(String(200))
    run_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, server_default="10")
    locked_by: Mapped[str | None] = mapped_column(String(100))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(100))
    #: The W3C traceparent of the span that enqueued the job: its run is a child span in the same trace.
    traceparent: Mapped[str | None] = mapped_column(String(55))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
