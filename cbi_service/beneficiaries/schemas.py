from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cbi_service.beneficiaries.models import Adjudication, Beneficiary, BeneficiaryImport, ImportRow
from cbi_service.beneficiaries.personal import Personal
from cbi_service.kit.countries import CountryCode
from cbi_service.kit.pagination import Page
from cbi_service.kit.timeutil import IsoDate

Sex = Literal["female", "male", "other", "unknown"]
DocumentType = Literal["national_id", "passport", "residence_permit", "birth_certificate", "other"]
PopulationType = Literal["in_destination", "in_transit", "pendular", "returnee", "host_community"]
Status = Literal["active", "pending_adjudication", "duplicate", "inactive", "erased"]
DedupStatus = Literal["unique", "duplicate", "possible_duplicate"]
Name = Field(min_length=1, max_length=200)


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: DocumentType
    number: str = Field(min_length=1, max_length=50, examples=["V-12.345.678"])
    issuing_country: CountryCode


class Location(BaseModel):
    model_config = ConfigDict(extra="forbid")

    country: CountryCode
    admin1: str | None = Field(default=None, max_length=200)
    admin2: str | None = Field(default=None, max_length=200)


class Consent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    given: Literal[True] = Field(description="Registration without informed consent is refused.")
    date: IsoDate
    purpose: str = Field(min_length=1, max_length=500)


class BeneficiaryCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    given_names: str = Name
    family_names: str = Name
    date_of_birth: IsoDate
    sex: Sex
    nationality: CountryCode
    documents: list[DocumentIn] = Field(default_factory=list, max_length=10)
    phone: str | None = Field(default=None, max_length=40, examples=["0412-555 12 34"])
    location: Location
    household_size: int = Field(ge=1, le=100)
    external_ref: str | None = Field(default=None, max_length=100)
    population_type: PopulationType = Field(
        default="in_destination",
        description="R4V's population group (§16): refugees and migrants in destination, in transit or "
        "pendular, Colombian returnees, or the host community. Kept in clear: reports count it, erased or not.",
    )
    disability: bool | None = Field(
        default=None,
        description="Whether the person has a disability; null when not asked. Personal data: sealed at rest, "
        "shown only to roles that see people in full, destroyed by erasure.",
    )
    consent: Consent


class BeneficiaryPatch(BaseModel):
    """Corrections; omitted fields stay as they are. Identity fields re-run deduplication."""

    model_config = ConfigDict(extra="forbid")

    given_names: str | None = Field(default=None, min_length=1, max_length=200)
    family_names: str | None = Field(default=None, min_length=1, max_length=200)
    date_of_birth: IsoDate | None = None
    sex: Sex | None = None
    nationality: CountryCode | None = None
    documents: list[DocumentIn] | None = Field(default=None, max_length=10)
    phone: str | None = Field(default=None, max_length=40)
    location: Location | None = None
    household_size: int | None = Field(default=None, ge=1, le=100)
    external_ref: str | None = Field(default=None, max_length=100)
    population_type: PopulationType | None = None
    disability: bool | None = None


class MatchExplanation(BaseModel):
    """One comparison of a match: the level the two records reached and what it weighed (bits of evidence;
    positive for the same person, negative against). A shared document decides alone and weighs null."""

    field: str
    level: str
    weight: float | None


class DedupMatch(BaseModel):
    beneficiary_id: uuid.UUID | None = None
    registry_ref: str | None = None
    registry: str
    score: float
    matched_on: list[str]
    match_weight: float | None = Field(
        default=None, description="The match model's total weight (log2 odds) for an internal match."
    )
    explanation: list[MatchExplanation] = Field(
        default_factory=list, description="What agreed and what disagreed, field by field, and how much each weighed."
    )
    unanswered_attempts: int | None = Field(
        default=None,
        description="Set in an adjudication when the external registry never answered about this person: how many"
        " times it was asked after the registration. Nothing was found (score 0); an adjudicator decides without"
        " that registry's word.",
    )


class RegistryStatus(BaseModel):
    registry: str = Field(description="`internal` (every beneficiary of every programme) or a CBI_REGISTRIES name.")
    status: Literal["checked", "unavailable"] = Field(
        description="`unavailable`: the registry could not answer in time, so its matches, if any, are unknown "
        '(never a "no match"); the person is checked against it again once it answers, and goes to '
        "adjudication if it knows them."
    )


class DedupResult(BaseModel):
    status: DedupStatus
    matches: list[DedupMatch]
    registries: list[RegistryStatus] = Field(description="Every registry consulted, the internal one first.")


class BeneficiaryOut(BaseModel):
    """A registered person. After erasure (§13) the personal fields are null and only what reports count
    remains."""

    # `personal_data` has a default so that `of()` builds a record before the router decides how it is shown,
    # yet every response carries it: required in the response schema.
    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    id: uuid.UUID
    status: Status
    personal_data: Literal["full", "masked"] = Field(
        default="full",
        description="`masked` for roles without full access (all but admin, registrar, programme_officer): "
        "names as initials ('María José' → 'M. J.'), the birth date as its year ('1990'), phone, document "
        "numbers and external_ref with all but their last two characters as '*', the length kept (§13).",
    )
    given_names: str | None
    family_names: str | None
    date_of_birth: date | Annotated[str, Field(pattern=r"^[0-9]{4}$")] | None = Field(
        description="A date (YYYY-MM-DD) when `personal_data` is `full`, the year alone (YYYY) when `masked`, "
        "null after erasure."
    )
    sex: Sex
    nationality: str
    documents: list[DocumentIn]
    phone: str | None
    location: Location
    household_size: int
    external_ref: str | None
    population_type: PopulationType
    disability: bool | None = Field(
        description="Null when not asked, when `personal_data` is `masked` (it is health data) and after erasure."
    )
    consent: Consent
    duplicate_of: uuid.UUID | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, b: Beneficiary, personal: Personal | None) -> BeneficiaryOut:
        return cls(
            id=b.id,
            status=b.status,
            given_names=personal.given_names if personal else None,
            family_names=personal.family_names if personal else None,
            date_of_birth=personal.date_of_birth if personal else None,
            sex=b.sex,
            nationality=b.nationality,
            documents=[
                DocumentIn(type=d["type"], number=d["number"], issuing_country=d["issuing_country"])
                for d in (personal.documents if personal else [])
            ],
            phone=personal.phone if personal else None,
            location=Location(country=b.location_country, admin1=b.location_admin1, admin2=b.location_admin2),
            household_size=b.household_size,
            external_ref=personal.external_ref if personal else None,
            population_type=b.population_type,
            disability=personal.disability if personal else None,
            consent=Consent(given=True, date=b.consent_date, purpose=b.consent_purpose),
            duplicate_of=b.duplicate_of,
            created_at=b.created_at,
            updated_at=b.updated_at,
        )


class BeneficiaryRegistered(BeneficiaryOut):
    dedup: DedupResult


class AdjudicationOut(BaseModel):
    id: uuid.UUID
    beneficiary_id: uuid.UUID
    status: Literal["open", "decided", "withdrawn"]
    matches: list[DedupMatch]
    decision: Literal["duplicate", "not_duplicate"] | None
    note: str | None
    decided_by: uuid.UUID | None
    decided_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, a: Adjudication) -> AdjudicationOut:
        return cls.model_validate(
            {
                "id": a.id,
                "beneficiary_id": a.beneficiary_id,
                "status": a.status,
                "matches": a.matches,
                "decision": a.decision,
                "note": a.note,
                "decided_by": a.decided_by,
                "decided_at": a.decided_at,
                "created_at": a.created_at,
            }
        )


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["duplicate", "not_duplicate"]
    note: str | None = Field(default=None, max_length=2000)


class EnrolmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    beneficiary_ids: list[uuid.UUID] = Field(min_length=1, max_length=1000)


class EnrolmentRejection(BaseModel):
    beneficiary_id: uuid.UUID
    reason: Literal["not_found", "not_active"]


class EnrolmentResult(BaseModel):
    programme_id: uuid.UUID
    enrolled: list[uuid.UUID]
    already_enrolled: list[uuid.UUID]
    rejected: list[EnrolmentRejection]


class ImportRowOut(BaseModel):
    row_number: int
    outcome: Literal["created", "duplicate", "pending_adjudication", "invalid"]
    beneficiary_id: uuid.UUID | None
    matches: list[dict[str, Any]]
    errors: list[dict[str, str]]
    registries_unavailable: list[str] = Field(
        description="External registries that could not answer for this row: the person is checked against "
        "them again once they do."
    )

    @classmethod
    def of(cls, row: ImportRow) -> ImportRowOut:
        return cls.model_validate(
            {
                "row_number": row.row_number,
                "outcome": row.outcome,
                "beneficiary_id": row.beneficiary_id,
                "matches": row.matches,
                "errors": row.errors,
                "registries_unavailable": row.registries_unavailable,
            }
        )


class ImportAccepted(BaseModel):
    id: uuid.UUID
    status: Literal["queued", "running", "completed", "failed"]


class ImportSummary(ImportAccepted):
    filename: str
    file_format: Literal["csv", "xlsx"]
    rows_total: int | None
    rows_done: int
    counts: dict[str, int]
    error: str | None
    created_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, imp: BeneficiaryImport) -> ImportSummary:
        return cls.model_validate(_import_fields(imp))


class ImportOut(ImportSummary):
    rows: Page[ImportRowOut]

    @classmethod
    def with_rows(cls, imp: BeneficiaryImport, rows: Page[ImportRowOut]) -> ImportOut:
        return cls.model_validate(_import_fields(imp) | {"rows": rows})


def _import_fields(imp: BeneficiaryImport) -> dict[str, Any]:
    return {
        "id": imp.id,
        "status": imp.status,
        "filename": imp.filename,
        "file_format": imp.file_format,
        "rows_total": imp.rows_total,
        "rows_done": imp.rows_done,
        "counts": imp.counts,
        "error": imp.error,
        "created_at": imp.created_at,
        "finished_at": imp.finished_at,
    }
