"""Dedup's own tables: the trained match models, the registry-wide sweeps with the pairs they found, and
the people still to be checked against an external registry that could not answer."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from cbi_service.kit.ids import new_id
from cbi_service.kit.models import Base, CreatedAt, one_of

SWEEP_STATUSES = ("queued", "running", "completed", "failed")
SWEEP_ENGINES = ("duckdb", "spark")


class DedupModel(CreatedAt, Base):
    """A match model artefact (`MatchModel.to_json()`), one version per training; the active one scores
    registrations and sweeps. The partial unique index lets at most one be active; with none, the model
    shipped with the service is used."""

    __tablename__ = "dedup_models"
    __table_args__ = (Index("uq_dedup_models_active", "active", unique=True, postgresql_where=text("active")),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    version: Mapped[str] = mapped_column(String(100), unique=True)
    artefact: Mapped[dict[str, Any]] = mapped_column(JSONB)
    trained: Mapped[dict[str, Any]] = mapped_column(JSONB)
    active: Mapped[bool] = mapped_column(Boolean, server_default="false")


class DedupSweep(CreatedAt, Base):
    """A registry-wide comparison run by a job in chunks; `chunks_done` lets a restarted job go on where
    it stopped, and the counters move with each committed chunk."""

    __tablename__ = "dedup_sweeps"
    __table_args__ = (
        CheckConstraint(one_of("status", SWEEP_STATUSES), name="status"),
        CheckConstraint(one_of("engine", SWEEP_ENGINES), name="engine"),
        Index("ix_dedup_sweeps_status_id", "status", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    status: Mapped[str] = mapped_column(String(10), server_default="queued")
    programme_id: Mapped[uuid.UUID | None] = mapped_column()
    engine: Mapped[str] = mapped_column(String(10), server_default="duckdb")
    model_version: Mapped[str | None] = mapped_column(String(100))
    review_threshold: Mapped[float | None] = mapped_column(Float)
    records: Mapped[int | None] = mapped_column(Integer)
    chunks_total: Mapped[int | None] = mapped_column(Integer)
    chunks_done: Mapped[list[int]] = mapped_column(ARRAY(Integer), server_default="{}")
    # SHA-256 of the swept ids in order: chunks are hashes of row numbers, valid only for the same records.
    input_digest: Mapped[str | None] = mapped_column(String(64))
    pairs_compared: Mapped[int] = mapped_column(Integer, server_default="0")
    pairs_matched: Mapped[int] = mapped_column(Integer, server_default="0")
    adjudications_opened: Mapped[int] = mapped_column(Integer, server_default="0")
    pairs_sent_to_adjudication: Mapped[int] = mapped_column(Integer, server_default="0")
    clusters: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[uuid.UUID | None] = mapped_column()
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DedupSweepPair(Base):
    """A pair a sweep found at or above the review threshold (ids only, no personal data): what clusters
    are counted on once every chunk is done."""

    __tablename__ = "dedup_sweep_pairs"

    sweep_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("dedup_sweeps.id", ondelete="CASCADE"), primary_key=True)
    low_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    high_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    chunk: Mapped[int] = mapped_column(Integer)
    match_probability: Mapped[float] = mapped_column(Float)
    match_weight: Mapped[float] = mapped_column(Float)


class RegistryRecheck(CreatedAt, Base):
    """A person registered or corrected while an external registry could not answer, to be asked about again
    once it does (ids and the registry's name only). A re-check round takes only rows whose `next_attempt_at`
    has come; taking one sets `claimed_at` (it asks outside any transaction, then settles only the rows still
    carrying its claim), counts an attempt and pushes `next_attempt_at` a lease away (a round that dies
    leaves it to the next after that). An attempt the registry did not answer puts it further off each time
    (`registries.recheck_registries`); a correction meanwhile re-defers the row: due now, no claim, no
    attempts."""

    __tablename__ = "dedup_registry_rechecks"
    __table_args__ = (Index("ix_dedup_registry_rechecks_registry_due", "registry_name", "next_attempt_at"),)

    beneficiary_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("beneficiaries.id", ondelete="CASCADE"), primary_key=True
    )
    registry_name: Mapped[str] = mapped_column(String(100), primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
