from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from cbi_service.kit.ids import new_id
from cbi_service.kit.models import Base, CreatedAt, one_of

STATUSES = ("active", "pending_adjudication", "duplicate", "inactive", "erased")
# Records dedup compares against: a `duplicate` points at its original, an `inactive` one is never paid.
MATCHABLE_STATUSES = ("active", "pending_adjudication")
SEXES = ("female", "male", "other", "unknown")
POPULATION_TYPES = ("in_destination", "in_transit", "pendular", "returnee", "host_community")
"""R4V's population groups (§4): refugees and migrants in destination, in transit or pendular, Colombian
returnees, and the host community."""
ADJUDICATION_STATUSES = ("open", "decided", "withdrawn")
DECISIONS = ("duplicate", "not_duplicate")
IMPORT_STATUSES = ("queued", "running", "completed", "failed")
ROW_OUTCOMES = ("created", "duplicate", "pending_adjudication", "invalid")


class Beneficiary(CreatedAt, Base):
    """A registered person. Their personal data is sealed (`kit.crypto`) under a data key of their own,
    stored wrapped beside it: `personal` (names, birth date, phone, documents, external_ref) and `profile`
    (the normalised form dedup scores candidates with). `external_ref_index` is a keyed digest to find a
    record by its reference. What stays in clear is what reports count and says nobody's name: sex,
    birth year, nationality, location, household size, population type. Erasure clears the sealed columns
    and the key. (Why `population_type` is in clear and `disability` sealed: `personal.Personal`.)"""

    __tablename__ = "beneficiaries"
    __table_args__ = (
        CheckConstraint(one_of("status", STATUSES), name="status"),
        CheckConstraint(one_of("sex", SEXES), name="sex"),
        CheckConstraint(one_of("population_type", POPULATION_TYPES), name="population_type"),
        CheckConstraint("household_size >= 1", name="household_size"),
        CheckConstraint("nationality ~ '^[A-Z]{2}$'", name="nationality"),
        CheckConstraint("location_country ~ '^[A-Z]{2}$'", name="location_country"),
        CheckConstraint("birth_year BETWEEN 1900 AND 2200", name="birth_year"),
        CheckConstraint(
            "(status = 'erased') = (personal IS NULL) AND (personal IS NULL) = (data_key IS NULL)"
            " AND (personal IS NULL) = (key_version IS NULL) AND (personal IS NULL) = (profile IS NULL)",
            name="sealed_unless_erased",
        ),
        Index("ix_beneficiaries_status_id", "status", "id"),
        Index(
            "ix_beneficiaries_external_ref_index",
            "external_ref_index",
            postgresql_where=text("external_ref_index IS NOT NULL"),
        ),
        Index("ix_beneficiaries_key_version", "key_version", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    status: Mapped[str] = mapped_column(String(24))
    sex: Mapped[str] = mapped_column(String(10))
    birth_year: Mapped[int] = mapped_column(SmallInteger)
    nationality: Mapped[str] = mapped_column(String(2))
    location_country: Mapped[str] = mapped_column(String(2))
    location_admin1: Mapped[str | None] = mapped_column(String(200))
    location_admin2: Mapped[str | None] = mapped_column(String(200))
    household_size: Mapped[int] = mapped_column(Integer)
    population_type: Mapped[str] = mapped_column(String(20), server_default="in_destination")
    consent_date: Mapped[date] = mapped_column(Date)
    consent_purpose: Mapped[str] = mapped_column(String(500))
    key_version: Mapped[int | None] = mapped_column(ForeignKey("crypto_keys.version"))
    data_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    personal: Mapped[bytes | None] = mapped_column(LargeBinary)
    profile: Mapped[bytes | None] = mapped_column(LargeBinary)
    external_ref_index: Mapped[bytes | None] = mapped_column(LargeBinary)
    registered_by: Mapped[uuid.UUID] = mapped_column()
    # Everyone who corrected the record: like its registrar, none of them may adjudicate it (four eyes).
    corrected_by: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(Uuid), server_default="{}")
    duplicate_of: Mapped[uuid.UUID | None] = mapped_column()
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    erased_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DedupKey(Base):
    """Blocking keys as 64-bit hashes (cbi_service.dedup.blocking.key_hash); the primary key's btree serves
    lookups by key."""

    __tablename__ = "dedup_keys"
    __table_args__ = (Index("ix_dedup_keys_beneficiary_id", "beneficiary_id"),)

    key: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    beneficiary_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("beneficiaries.id", ondelete="CASCADE"), primary_key=True
    )


class Adjudication(CreatedAt, Base):
    """A possible duplicate waiting for a person's decision; at most one open per beneficiary."""

    __tablename__ = "adjudications"
    __table_args__ = (
        CheckConstraint(one_of("status", ADJUDICATION_STATUSES), name="status"),
        CheckConstraint(f"decision IS NULL OR {one_of('decision', DECISIONS)}", name="decision"),
        CheckConstraint("(status = 'decided') = (decision IS NOT NULL)", name="decided_has_decision"),
        Index(
            "uq_adjudications_open_beneficiary",
            "beneficiary_id",
            unique=True,
            postgresql_where=text("status = 'open'"),
        ),
        Index("ix_adjudications_status_id", "status", "id"),
        Index("ix_adjudications_beneficiary_id", "beneficiary_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    beneficiary_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("beneficiaries.id"))
    status: Mapped[str] = mapped_column(String(10), server_default="open")
    matches: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    decision: Mapped[str | None] = mapped_column(String(20))
    note: Mapped[str | None] = mapped_column(String(2000))
    decided_by: Mapped[uuid.UUID | None] = mapped_column()
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AdjudicationPair(CreatedAt, Base):
    """A pair of people a registry-wide sweep put before an adjudicator (`low_id` < `high_id`): the
    primary key is what makes a sweep, resumed or run again, never send the same pair twice."""

    __tablename__ = "adjudication_pairs"

    low_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("beneficiaries.id"), primary_key=True)
    high_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("beneficiaries.id"), primary_key=True)
    # Checked at commit: a sweep claims its pairs first, then opens the adjudications that hold them.
    adjudication_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("adjudications.id", deferrable=True, initially="DEFERRED"), index=True
    )


class Enrolment(CreatedAt, Base):
    __tablename__ = "enrolments"
    __table_args__ = (
        UniqueConstraint("programme_id", "beneficiary_id", name="uq_enrolments_programme_beneficiary"),
        Index("ix_enrolments_beneficiary_id", "beneficiary_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    programme_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("programmes.id"))
    beneficiary_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("beneficiaries.id"))
    enrolled_by: Mapped[uuid.UUID] = mapped_column()


class BeneficiaryImport(CreatedAt, Base):
    """A bulk file being registered in the background; counts and `rows_done` move with each committed chunk."""

    __tablename__ = "beneficiary_imports"
    __table_args__ = (
        CheckConstraint(one_of("status", IMPORT_STATUSES), name="status"),
        CheckConstraint("file_format IN ('csv', 'xlsx')", name="file_format"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    status: Mapped[str] = mapped_column(String(10), server_default="queued")
    filename: Mapped[str] = mapped_column(String(255))
    file_format: Mapped[str] = mapped_column(String(4))
    rows_total: Mapped[int | None] = mapped_column(Integer)
    rows_done: Mapped[int] = mapped_column(Integer, server_default="0")
    counts: Mapped[dict[str, int]] = mapped_column(JSONB, default=dict)
    error: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[uuid.UUID] = mapped_column()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ImportChunk(Base):
    """The uploaded file, stored in pieces so neither upload nor processing holds it whole in memory,
    each sealed under a key version (it is people's data) until the import is done with it."""

    __tablename__ = "beneficiary_import_chunks"

    import_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("beneficiary_imports.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_version: Mapped[int] = mapped_column(ForeignKey("crypto_keys.version"), index=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class ImportRow(Base):
    __tablename__ = "beneficiary_import_rows"
    __table_args__ = (
        CheckConstraint(one_of("outcome", ROW_OUTCOMES), name="outcome"),
        Index("ix_beneficiary_import_rows_outcome", "import_id", "outcome", "row_number"),
    )

    import_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("beneficiary_imports.id", ondelete="CASCADE"), primary_key=True
    )
    row_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    outcome: Mapped[str] = mapped_column(String(24))
    beneficiary_id: Mapped[uuid.UUID | None] = mapped_column()
    matches: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    errors: Mapped[list[dict[str, str]]] = mapped_column(JSONB, default=list)
    # External registries that could not answer for this row (the person is asked about again later).
    registries_unavailable: Mapped[list[str]] = mapped_column(ARRAY(String(100)), server_default="{}")
