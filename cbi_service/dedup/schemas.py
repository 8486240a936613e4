"""The API's view of registry-wide sweeps."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from cbi_service.dedup.models import DedupSweep

SweepStatus = Literal["queued", "running", "completed", "failed"]
Engine = Literal["duckdb", "spark"]


class SweepIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    programme_id: uuid.UUID | None = Field(
        default=None, description="Compare only the people enrolled in this programme with each other."
    )
    engine: Engine = Field(
        default="duckdb",
        description="`duckdb` (embedded, the default) or `spark` (the cluster at CBI_DEDUP_SPARK_MASTER).",
    )


class SweepAccepted(BaseModel):
    id: uuid.UUID
    status: SweepStatus


class SweepProgress(BaseModel):
    chunks_done: int
    chunks_total: int | None


class SweepOut(SweepAccepted):
    programme_id: uuid.UUID | None
    engine: Engine
    model_version: str | None = Field(description="The match model the sweep scores with (set once it starts).")
    review_threshold: float | None
    records: int | None = Field(description="Matchable records compared (known once the sweep has read them).")
    pairs_compared: int = Field(description="Candidate pairs scored (pairs sharing an online blocking key).")
    pairs_matched: int = Field(description="Pairs at or above the review threshold.")
    clusters: int | None = Field(description="Groups of two or more records linked by those pairs (at the end).")
    adjudications_opened: int = Field(description="New adjudications opened for pairs not already decided.")
    pairs_sent_to_adjudication: int = Field(
        description="Pairs put before adjudicators, in new adjudications or added to one already open."
    )
    progress: SweepProgress
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, sweep: DedupSweep) -> SweepOut:
        return cls.model_validate(
            {
                "id": sweep.id,
                "status": sweep.status,
                "programme_id": sweep.programme_id,
                "engine": sweep.engine,
                "model_version": sweep.model_version,
                "review_threshold": sweep.review_threshold,
                "records": sweep.records,
                "pairs_compared": sweep.pairs_compared,
                "pairs_matched": sweep.pairs_matched,
                "clusters": sweep.clusters,
                "adjudications_opened": sweep.adjudications_opened,
                "pairs_sent_to_adjudication": sweep.pairs_sent_to_adjudication,
                "progress": {"chunks_done": len(sweep.chunks_done), "chunks_total": sweep.chunks_total},
                "error": sweep.error,
                "created_at": sweep.created_at,
                "started_at": sweep.started_at,
                "finished_at": sweep.finished_at,
            }
        )
