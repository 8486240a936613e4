"""Registration, correction and deactivation of beneficiaries, deduplication outcomes, adjudication, enrolment.

Every path that creates or changes a person's identity runs the same steps: validate and canonicalise
(cbi_service.dedup.documents), build the match record and its blocking keys, take advisory locks on the
keys' buckets, score the internal candidates and ask the external registries, then act on the outcome.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.audit.service import Actor, record_audit
from cbi_service.auth.roles import Principal
from cbi_service.beneficiaries.models import MATCHABLE_STATUSES, Beneficiary
from cbi_service.beneficiaries.personal import Personal, open_personal, sealed_columns
from cbi_service.beneficiaries.repository import (
    AdjudicationRepository,
    BeneficiaryRepository,
    EnrolmentRepository,
    ImportRepository,
    chunk_aad,
)
from cbi_service.beneficiaries.schemas import (
    AdjudicationOut,
    BeneficiaryCreate,
    BeneficiaryOut,
    BeneficiaryPatch,
    BeneficiaryRegistered,
    DecisionIn,
    DedupResult,
    EnrolmentRejection,
    EnrolmentRequest,
    EnrolmentResult,
)
from cbi_service.dedup.blocking import blocking_keys
from cbi_service.dedup.documents import FieldError, check_birth_date, normalize_document, normalize_phone
from cbi_service.dedup.normalize import DocumentKey, MatchRecord, build_record
from cbi_service.dedup.registries import (
    RegistryChecks,
    check_registries,
    defer_rechecks,
    registries_for,
    settle_rechecks,
)
from cbi_service.dedup.scoring import Decision, DedupStatus, decide
from cbi_service.dedup.service import active_model
from cbi_service.dedup.settings import get_dedup_settings
from cbi_service.kit.crypto import Keyring, keyring
from cbi_service.kit.db import release_connection
from cbi_service.kit.errors import AppError, Conflict, Forbidden, UnprocessableEntity
from cbi_service.kit.idempotency import IdempotencyRepository
from cbi_service.kit.ids import new_id
from cbi_service.kit.settings import Settings

SEVERITY: dict[DedupStatus, int] = {"unique": 0, "possible_duplicate": 1, "duplicate": 2}


def today() -> date:
    return datetime.now(UTC).date()


@dataclass(frozen=True)
class Prepared:
    """A registration after validation: canonical values, its match record and blocking keys."""

    data: BeneficiaryCreate
    record: MatchRecord
    keys: list[str]
    documents: list[dict[str, str]]
    phone: str | None


def prepare(data: BeneficiaryCreate) -> Prepared:
    """Validate what pydantic cannot (documents per country, phone, dates) and canonicalise for matching."""
    errors: list[dict[str, str]] = []
    now = today()
    try:
        check_birth_date(data.date_of_birth, now)
    except FieldError as exc:
        errors.append({"field": "date_of_birth", "message": exc.message})
    if data.consent.date > now:
        errors.append({"field": "consent.date", "message": "must not be in the future"})
    documents: list[dict[str, str]] = []
    keys: list[DocumentKey] = []
    for i, doc in enumerate(data.documents):
        try:
            number = normalize_document(doc.type, doc.number, doc.issuing_country)
        except FieldError as exc:
            errors.append({"field": f"documents[{i}].{exc.field}", "message": exc.message})
            continue
        documents.append(
            {"type": doc.type, "number": doc.number, "issuing_country": doc.issuing_country, "normalised": number}
        )
        keys.append(DocumentKey(doc.type, doc.issuing_country, number))
    phone = None
    if data.phone:
        try:
            phone = normalize_phone(data.phone, data.location.country, data.nationality)
        except FieldError as exc:
            errors.append({"field": "phone", "message": exc.message})
    if errors:
        raise UnprocessableEntity("The registration is not valid.", errors=errors)
    record = build_record(
        given_names=data.given_names,
        family_names=data.family_names,
        date_of_birth=data.date_of_birth,
        sex=data.sex,
        nationality=data.nationality,
        documents=tuple(keys),
        phone=phone,
    )
    return Prepared(data, record, blocking_keys(record), documents, phone)


@dataclass
class DedupOutcome:
    """Internal and external matches merged into the contract's `dedup` object, with the registries asked."""

    status: DedupStatus = "unique"
    matches: list[dict[str, Any]] = field(default_factory=list)
    existing_id: uuid.UUID | None = None
    checks: RegistryChecks = field(default_factory=RegistryChecks)

    def result(self) -> DedupResult:
        return DedupResult.model_validate(
            {"status": self.status, "matches": self.matches, "registries": self.checks.statuses()}
        )

    def unchecked(self, beneficiary_id: uuid.UUID) -> list[tuple[uuid.UUID, str]]:
        """(person, registry) for each external registry that could not answer: to ask again later."""
        return [(beneficiary_id, name) for name in self.checks.asked if name in self.checks.unavailable]


def combine(decision: Decision[uuid.UUID], checks: RegistryChecks) -> DedupOutcome:
    outcome = DedupOutcome(status=decision.status, checks=checks)
    for match in decision.matches:
        outcome.matches.append(
            {
                "beneficiary_id": match.ident,
                "registry": "internal",
                "score": round(match.score, 4),
                "matched_on": match.matched_on,
                "match_weight": match.match_weight,
                "explanation": match.explanation,
            }
        )
    if decision.status == "duplicate":
        outcome.existing_id = decision.matches[0].ident
    # A partner registry's hit is weighed by the partner's keys, not by this registry's model: the same
    # document is one person, anything else is for an adjudicator.
    for ext in checks.matches:
        status: DedupStatus = "duplicate" if ext.same_document else "possible_duplicate"
        outcome.matches.append(
            {
                "registry_ref": ext.registry_ref,
                "registry": ext.registry,
                "score": round(ext.score, 4),
                "matched_on": ext.matched_on,
            }
        )
        if SEVERITY[status] > SEVERITY[outcome.status]:
            outcome.status = status
    return outcome


async def external_checks(session: AsyncSession, settings: Settings, prepared: Prepared) -> RegistryChecks:
    """The external registries' answers, asked before the registration's locks are taken and with the
    request's transaction, which has only read so far, ended: a slow registry keeps no other registration
    waiting, and no pooled connection idle while it answers."""
    registries = registries_for(settings.registries)
    if registries:
        await release_connection(session)
    return await check_registries(registries, prepared.record)


async def run_dedup(
    session: AsyncSession, prepared: Prepared, checks: RegistryChecks, *, exclude: uuid.UUID | None = None
) -> DedupOutcome:
    dedup_settings = get_dedup_settings()
    candidates = await BeneficiaryRepository(session).candidates(prepared.keys, dedup_settings.max_candidates, exclude)
    decision = decide(prepared.record, candidates, dedup_settings, await active_model(session))
    return combine(decision, checks)


def duplicate_conflict(outcome: DedupOutcome) -> Conflict:
    """409 naming the record (or partner registry entry) this person already has; nothing is stored."""
    extra: dict[str, Any] = {"dedup": outcome.result().model_dump(mode="json")}
    if outcome.existing_id is not None:
        extra["existing_id"] = str(outcome.existing_id)
    return Conflict("This person is already registered.", extra=extra)


def personal_of(prepared: Prepared) -> Personal:
    data = prepared.data
    return Personal(
        given_names=data.given_names.strip(),
        family_names=data.family_names.strip(),
        date_of_birth=data.date_of_birth,
        phone=prepared.phone,
        external_ref=data.external_ref,
        documents=prepared.documents,
        disability=data.disability,
    )


def columns_of(ring: Keyring, version: int, beneficiary_id: uuid.UUID, prepared: Prepared) -> dict[str, Any]:
    """A registration's columns: what reports count in clear, the rest sealed under the person's key."""
    data = prepared.data
    return {
        "sex": data.sex,
        "nationality": data.nationality,
        "location_country": data.location.country,
        "location_admin1": data.location.admin1,
        "location_admin2": data.location.admin2,
        "household_size": data.household_size,
        "population_type": data.population_type,
        **sealed_columns(ring, version, beneficiary_id, personal_of(prepared), prepared.record),
    }


async def personal_data(session: AsyncSession, people: Sequence[Beneficiary]) -> dict[uuid.UUID, Personal]:
    """The personal data of these people, opened (the erased have none)."""
    ring = await keyring(session)
    await ring.require(session, {b.key_version for b in people})
    return {
        b.id: open_personal(ring, b.id, b.key_version, b.data_key, b.personal)
        for b in people
        if b.personal is not None and b.data_key is not None and b.key_version is not None
    }


async def holder_names(session: AsyncSession, beneficiary_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Given names and family initial ("María José G."), how a paper voucher names its holder: enough for a
    merchant to match the person in front of them, while the family name and documents stay here. The
    erased have none."""
    people = await BeneficiaryRepository(session).many(beneficiary_ids)
    return {ident: holder_name(personal) for ident, personal in (await personal_data(session, people)).items()}


def holder_name(personal: Personal) -> str:
    family = personal.family_names.strip()
    return f"{personal.given_names} {family[0].upper()}." if family else personal.given_names


async def out_many(session: AsyncSession, people: Sequence[Beneficiary]) -> list[BeneficiaryOut]:
    opened = await personal_data(session, people)
    return [BeneficiaryOut.of(b, opened.get(b.id)) for b in people]


async def out_one(session: AsyncSession, beneficiary: Beneficiary) -> BeneficiaryOut:
    return (await out_many(session, [beneficiary]))[0]


async def reseal_people(session: AsyncSession, version: int, limit: int) -> int:
    """Up to `limit` people's data opened and sealed again under a fresh data key wrapped by `version`
    (key rotation); returns how many."""
    repo = BeneficiaryRepository(session)
    ring = await keyring(session)
    rows = await repo.sealed_under_other(version, limit)
    await ring.require(session, {r.key_version for r in rows})
    resealed = []
    for r in rows:
        key = ring.subject_key(r.id, r.key_version, r.data_key)
        fields = {name: ring.open_field(key, r.id, name, getattr(r, name)) for name in ("personal", "profile")}
        sealed = ring.seal_subject(r.id, fields, version)
        resealed.append((r.id, sealed.data_key, sealed.fields["personal"], sealed.fields["profile"]))
    await repo.reseal(version, resealed)
    return len(rows)


async def reseal_import_files(session: AsyncSession, version: int, limit: int) -> int:
    """Pieces of uploaded files not yet processed, sealed again under `version`."""
    repo = ImportRepository(session)
    ring = await keyring(session)
    rows = await repo.chunks_under_other(version, limit)
    await ring.require(session, {r.key_version for r in rows})
    for r in rows:
        aad = chunk_aad(r.import_id, r.seq)
        await repo.reseal_chunk(
            r.import_id, r.seq, version, ring.seal(version, ring.open(r.key_version, r.data, aad), aad)
        )
    return len(rows)


async def sealed_under_other(session: AsyncSession, version: int) -> int:
    """How many people and file pieces a version other than `version` seals."""
    people = await BeneficiaryRepository(session).count_sealed_under_other(version)
    return people + await ImportRepository(session).count_chunks_under_other(version)


def _summary(b: Beneficiary, **extra: Any) -> dict[str, Any]:
    """Audit summary without personal data: the trail must be shareable with auditors."""
    return {"status": b.status, **extra}


def _unavailable(outcome: DedupOutcome) -> dict[str, Any]:
    """For the audit trail: the external registries a decision was taken without (to be asked again)."""
    names = [name for name in outcome.checks.asked if name in outcome.checks.unavailable]
    return {"registries_unavailable": names} if names else {}


async def check(session: AsyncSession, settings: Settings, data: BeneficiaryCreate) -> DedupResult:
    """The dedup outcome a registration would get; reads only."""
    prepared = prepare(data)
    return (await run_dedup(session, prepared, await external_checks(session, settings, prepared))).result()


async def registration_checks(
    session: AsyncSession, settings: Settings, data: BeneficiaryCreate, *, answered: bool = False
) -> RegistryChecks:
    """The external registries' answers for a registration, asked before its Idempotency-Key is locked: the
    key's lock lives as long as the transaction, which `external_checks` ends. Nothing is asked for a
    registration whose key is `answered` already (a retry, replayed: the person is not sent to the partners
    again), nor for a body `prepare` refuses (the registration refuses it, under its key); without registries
    nothing is prepared here."""
    if answered or not settings.registries:
        return RegistryChecks()
    try:
        prepared = prepare(data)
    except AppError:
        return RegistryChecks()
    return await external_checks(session, settings, prepared)


async def register(
    session: AsyncSession, settings: Settings, principal: Principal, data: BeneficiaryCreate, checks: RegistryChecks
) -> BeneficiaryRegistered:
    """Register `data` on the registries' answers `checks` (`registration_checks`)."""
    prepared = prepare(data)
    repo = BeneficiaryRepository(session)
    await repo.lock_keys(prepared.keys)
    outcome = await run_dedup(session, prepared, checks)
    if outcome.status == "duplicate":
        raise duplicate_conflict(outcome)
    ring = await keyring(session)
    beneficiary_id = new_id()
    beneficiary = Beneficiary(
        id=beneficiary_id,
        status="active" if outcome.status == "unique" else "pending_adjudication",
        consent_date=data.consent.date,
        consent_purpose=data.consent.purpose,
        registered_by=principal.id,
        **columns_of(ring, await ring.active(session), beneficiary_id, prepared),
    )
    await repo.add(beneficiary, prepared.keys)
    if outcome.status == "possible_duplicate":
        await AdjudicationRepository(session).open(beneficiary.id, jsonable_matches(outcome.matches))
    await defer_rechecks(session, outcome.unchecked(beneficiary.id))
    await record_audit(
        session, principal, "beneficiary.registered", "beneficiary", beneficiary.id, None,
        _summary(beneficiary, dedup=outcome.status, **_unavailable(outcome)),
    )  # fmt: skip
    return BeneficiaryRegistered(
        **BeneficiaryOut.of(beneficiary, personal_of(prepared)).model_dump(), dedup=outcome.result()
    )


def jsonable_matches(matches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: str(v) if isinstance(v, uuid.UUID) else v for k, v in m.items()} for m in matches]


def _merged(current_out: BeneficiaryOut, patch: BeneficiaryPatch) -> BeneficiaryCreate:
    current = current_out.model_dump()
    changes = patch.model_dump(exclude_unset=True)
    required = (
        "given_names", "family_names", "date_of_birth", "sex", "nationality", "location", "household_size",
        "population_type",
    )  # fmt: skip
    if removed := [name for name in required if name in changes and changes[name] is None]:
        raise UnprocessableEntity(
            "A required field cannot be removed.",
            errors=[{"field": name, "message": "must not be null"} for name in removed],
        )
    fields = {
        name: current[name]
        for name in (
            "given_names", "family_names", "date_of_birth", "sex", "nationality", "documents", "phone",
            "location", "household_size", "external_ref", "population_type", "disability", "consent",
        )
    }  # fmt: skip
    fields.update(changes)
    if fields["documents"] is None:
        fields["documents"] = []
    return BeneficiaryCreate.model_validate(fields)


async def correct(
    session: AsyncSession, settings: Settings, principal: Principal, beneficiary_id: uuid.UUID, patch: BeneficiaryPatch
) -> BeneficiaryRegistered:
    """Apply corrections and re-run dedup against everyone else; a correction that reveals a duplicate is
    refused (409) like a registration would be. A record waiting for adjudication keeps waiting even if the
    correction makes it look unique: otherwise editing a record would be a way around the four-eyes rule.

    The external registries are asked before the person's row is locked, so a slow registry keeps no other
    write to them waiting. Once locked, the row is read again: if it changed meanwhile, the correction is
    applied to what it is now, on the registries' answers if what they were asked is still what it would
    ask (a change elsewhere, a household size), else refused (409) to be sent again."""
    repo = BeneficiaryRepository(session)
    beneficiary = await repo.require(beneficiary_id)
    _check_correctable(beneficiary)
    seen = beneficiary.updated_at
    prepared = prepare(_merged(await out_one(session, beneficiary), patch))
    checks = await external_checks(session, settings, prepared)
    beneficiary = await repo.require(beneficiary_id, for_update=True, populate_existing=True)
    _check_correctable(beneficiary)
    if beneficiary.updated_at != seen:
        asked = prepared.record
        prepared = prepare(_merged(await out_one(session, beneficiary), patch))
        if prepared.record != asked:
            raise Conflict("The beneficiary was changed while this correction was being checked; send it again.")
    await repo.lock_keys(prepared.keys)
    outcome = await run_dedup(session, prepared, checks, exclude=beneficiary.id)
    if outcome.status == "duplicate":
        raise duplicate_conflict(outcome)
    before = _summary(beneficiary)
    ring = await keyring(session)
    for name, value in columns_of(ring, await ring.active(session), beneficiary.id, prepared).items():
        setattr(beneficiary, name, value)
    if principal.id not in beneficiary.corrected_by:
        beneficiary.corrected_by = [*beneficiary.corrected_by, principal.id]
    if outcome.status == "possible_duplicate":
        beneficiary.status = "pending_adjudication"
        await AdjudicationRepository(session).open(beneficiary.id, jsonable_matches(outcome.matches))
    beneficiary.updated_at = datetime.now(UTC)
    await repo.replace_keys(beneficiary.id, prepared.keys)
    await settle_rechecks(session, beneficiary.id, outcome.checks)
    await session.flush()
    changed = sorted(patch.model_dump(exclude_unset=True))
    await record_audit(
        session, principal, "beneficiary.corrected", "beneficiary", beneficiary.id, before,
        _summary(beneficiary, fields=changed, dedup=outcome.status, **_unavailable(outcome)),
    )  # fmt: skip
    return BeneficiaryRegistered(
        **BeneficiaryOut.of(beneficiary, personal_of(prepared)).model_dump(), dedup=outcome.result()
    )


def _check_correctable(beneficiary: Beneficiary) -> None:
    if beneficiary.status not in MATCHABLE_STATUSES:
        raise Conflict(f"A {beneficiary.status} beneficiary cannot be corrected.")


async def deactivate(session: AsyncSession, principal: Principal, beneficiary_id: uuid.UUID) -> BeneficiaryOut:
    repo = BeneficiaryRepository(session)
    beneficiary = await repo.require(beneficiary_id, for_update=True)
    if beneficiary.status == "inactive":
        return await out_one(session, beneficiary)
    before = _summary(beneficiary)
    beneficiary.status = "inactive"
    beneficiary.updated_at = datetime.now(UTC)
    await repo.drop_keys(beneficiary.id)
    await AdjudicationRepository(session).withdraw_open(beneficiary.id)
    await session.flush()
    await record_audit(
        session, principal, "beneficiary.deactivated", "beneficiary", beneficiary.id, before, _summary(beneficiary)
    )
    return await out_one(session, beneficiary)


async def get(session: AsyncSession, beneficiary_id: uuid.UUID) -> Beneficiary:
    return await BeneficiaryRepository(session).require(beneficiary_id)


async def lock(session: AsyncSession, beneficiary_id: uuid.UUID) -> Beneficiary:
    """The person's row, locked until the transaction ends: a batch takes it shared before paying them."""
    return await BeneficiaryRepository(session).require(beneficiary_id, for_update=True)


async def erase_locked(session: AsyncSession, actor: Actor | None, beneficiary: Beneficiary, reason: str) -> None:
    """Destroy a person's personal data (§13): the sealed columns and the key that opened them, their
    blocking keys, the stored responses that showed them; what reports count stays. The caller locked the
    row (`lock`) and checked that no money can still move."""
    before = _summary(beneficiary)
    for column in ("key_version", "data_key", "personal", "profile", "external_ref_index"):
        setattr(beneficiary, column, None)
    beneficiary.status = "erased"
    beneficiary.erased_at = beneficiary.updated_at = datetime.now(UTC)
    await BeneficiaryRepository(session).drop_keys(beneficiary.id)
    await AdjudicationRepository(session).withdraw_open(beneficiary.id)
    await IdempotencyRepository(session).forget_subject(beneficiary.id)
    await session.flush()
    await record_audit(
        session, actor, "beneficiary.erased", "beneficiary", beneficiary.id, before,
        {"status": "erased", "reason": reason},
    )  # fmt: skip


async def inactive_since(session: AsyncSession, cutoff: datetime, limit: int) -> list[uuid.UUID]:
    """People whose personal data retention has run out (`BeneficiaryRepository.inactive_since`), locked."""
    return await BeneficiaryRepository(session).inactive_since(cutoff, limit)


async def enrolments_of(session: AsyncSession, beneficiary_id: uuid.UUID) -> list[dict[str, Any]]:
    return [
        {"programme_id": e.programme_id, "enrolled_at": e.created_at, "enrolled_by": e.enrolled_by}
        for e in await EnrolmentRepository(session).of_beneficiary(beneficiary_id)
    ]


async def decide_adjudication(
    session: AsyncSession, principal: Principal, adjudication_id: uuid.UUID, body: DecisionIn
) -> AdjudicationOut:
    """Four eyes: nobody decides on data they entered, i.e. whoever registered the record or corrected it.

    Every correction counts, not only the last: a correction re-runs dedup and may be what opened the
    adjudication or changed the evidence under review, and a later edit by someone else (a household size)
    must not clear its author to judge their own identity data. The registrar of a bulk import is the
    person who uploaded the file.
    """
    adjudication = await AdjudicationRepository(session).require(adjudication_id, for_update=True)
    beneficiaries = BeneficiaryRepository(session)
    beneficiary = await beneficiaries.require(adjudication.beneficiary_id, for_update=True)
    if principal.id == beneficiary.registered_by or principal.id in beneficiary.corrected_by:
        raise Forbidden("Nobody may decide on a record they registered or corrected.")
    if adjudication.status != "open":
        raise Conflict(f"This adjudication is already {adjudication.status}.")
    before = _summary(beneficiary)
    adjudication.status = "decided"
    adjudication.decision = body.decision
    adjudication.note = body.note
    adjudication.decided_by = principal.id
    adjudication.decided_at = datetime.now(UTC)
    if body.decision == "duplicate":
        beneficiary.status = "duplicate"
        internal = [m["beneficiary_id"] for m in adjudication.matches if m.get("beneficiary_id")]
        beneficiary.duplicate_of = uuid.UUID(internal[0]) if internal else None
        await beneficiaries.drop_keys(beneficiary.id)
    else:
        beneficiary.status = "active"
    beneficiary.updated_at = datetime.now(UTC)
    await session.flush()
    await record_audit(
        session, principal, "adjudication.decided", "beneficiary", beneficiary.id, before,
        _summary(beneficiary, adjudication_id=str(adjudication.id), decision=body.decision),
    )  # fmt: skip
    return AdjudicationOut.of(adjudication)


class ProgrammeRef(Protocol):
    """The programme enrolled in, as the caller looked it up: beneficiaries never reads the programmes table."""

    @property
    def id(self) -> uuid.UUID: ...


async def enrol(
    session: AsyncSession, principal: Principal, programme: ProgrammeRef, body: EnrolmentRequest
) -> EnrolmentResult:
    """Enrol the active ones; report the others with the reason instead of failing the whole request."""
    ids = list(dict.fromkeys(body.beneficiary_ids))
    statuses = await BeneficiaryRepository(session).statuses_for_share(ids)
    active = [i for i in ids if statuses.get(i) == "active"]
    rejected = [
        EnrolmentRejection(beneficiary_id=i, reason="not_found" if i not in statuses else "not_active")
        for i in ids
        if statuses.get(i) != "active"
    ]
    new = await EnrolmentRepository(session).enrol(programme.id, active, principal.id)
    result = EnrolmentResult(
        programme_id=programme.id,
        enrolled=[i for i in active if i in new],
        already_enrolled=[i for i in active if i not in new],
        rejected=rejected,
    )
    if new:
        await record_audit(
            session, principal, "programme.enrolled", "programme", programme.id, None,
            {"beneficiary_ids": [str(i) for i in result.enrolled]},
        )  # fmt: skip
    return result
