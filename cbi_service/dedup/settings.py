"""Dedup configuration from CBI_DEDUP_* variables: the two decision thresholds, the candidate cap, and how
sweeps run."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class DedupSettings(BaseSettings):
    """Thresholds apply to the match model's probability that two records are one person.

    At or above `auto_threshold` a registration is refused as a duplicate without human review; between the
    two it is kept for adjudication. In match weight (log2 odds) the defaults are about 16.6 and 6.6 bits:
    a pair must agree on more than names and a birth date alone to be merged without a person. They come
    from the quality benchmark (benchmarks/dedup_quality.py) on every labelled set: moving `auto_threshold`
    down trades precision of automatic decisions, the costliest error, for fewer adjudications; moving
    `review_threshold` down sends more look-alikes (siblings, namesakes) to adjudication.
    """

    model_config = SettingsConfigDict(env_prefix="CBI_DEDUP_", env_file=".env", extra="ignore")

    auto_threshold: float = Field(default=0.99999, gt=0, le=1)
    review_threshold: float = Field(default=0.99, gt=0, le=1)
    max_candidates: int = Field(default=200, ge=1, le=5000)
    #: Worker processes a DuckDB sweep runs its chunks in (0: one per core); each holds the registry's
    #: records in memory, some 600 MiB per million.
    sweep_workers: int = Field(default=0, ge=0, le=64)
    #: Where `engine: spark` sweeps run: `local[N]` on this machine, or a cluster's master URL.
    spark_master: str = Field(default="local[2]", min_length=1, max_length=500)

    @model_validator(mode="after")
    def _ordered(self) -> DedupSettings:
        if self.review_threshold > self.auto_threshold:
            raise ValueError("CBI_DEDUP_REVIEW_THRESHOLD must not exceed CBI_DEDUP_AUTO_THRESHOLD")
        return self


@lru_cache(maxsize=1)
def get_dedup_settings() -> DedupSettings:
    return DedupSettings()
