from __future__ import annotations

import builtins
import uuid
from collections.abc import AsyncGenerator, Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.types import BigInteger, Integer, LargeBinary, Text, Uuid

from cbi_service.beneficiaries.models import (
    MATCHABLE_STATUSES,
    Adjudication,
    AdjudicationPair,
    Beneficiary,
    BeneficiaryImport,
    DedupKey,
    Enrolment,
    ImportChunk,
    ImportRow,
)
from cbi_service.beneficiaries.personal import external_ref_index, open_profile, profile_dict
from cbi_service.dedup.blocking import key_hash
from cbi_service.dedup.normalize import MatchRecord
from cbi_service.kit.crypto import keyring
from cbi_service.kit.db import read_snapshot
from cbi_service.kit.repository import Repository

# Advisory-lock namespace for dedup; keys hash into a fixed number of buckets so that a bulk chunk's locks
# stay within PostgreSQL's lock table however many keys it has.
LOCK_NAMESPACE = 0x0DED
LOCK_BUCKETS = 1024
ERROR_BATCH = 5000


# Bulk paths insert through the tables (Core) rather than the mapped classes: the ORM's bulk INSERT costs
# several times more per row for the same statement.
BENEFICIARIES = cast(Table, Beneficiary.__table__)
ADJUDICATIONS = cast(Table, Adjudication.__table__)
ADJUDICATION_PAIRS = cast(Table, AdjudicationPair.__table__)
IMPORT_ROWS = cast(Table, ImportRow.__table__)


def chunk_aad(import_id: uuid.UUID, seq: int) -> bytes:
    return b"beneficiary_import_chunks:" + import_id.bytes + seq.to_bytes(4, "big")


def lock_bucket(key: str) -> int:
    return key_hash(key) % LOCK_BUCKETS


class BeneficiaryRepository(Repository[Beneficiary]):
    model = Beneficiary
    not_found = "Beneficiary not found."

    async def lock_keys(self, keys: Iterable[str]) -> None:
        """Serialise registrations that share a blocking key until this transaction ends.

        Two registrations of one person share keys, so the second waits, then sees the first's keys and
        is caught as a duplicate. Buckets are taken in ascending order, so lockers never deadlock.
        """
        buckets = sorted({lock_bucket(k) for k in keys})
        if buckets:
            await self.session.execute(
                text("SELECT pg_advisory_xact_lock(:ns, b) FROM unnest(:buckets) AS b").bindparams(
                    bindparam("buckets", type_=ARRAY(Integer))
                ),
                {"ns": LOCK_NAMESPACE, "buckets": buckets},
            )

    async def candidates(
        self, keys: Sequence[str], limit: int, exclude: uuid.UUID | None = None
    ) -> list[tuple[uuid.UUID, MatchRecord]]:
        """Matchable people sharing a key, most shared keys first, at most `limit`."""
        if not keys:
            return []
        stmt = text(
            """
            SELECT b.id, b.key_version, b.data_key, b.profile
            FROM (
                SELECT beneficiary_id, count(*) AS shared FROM dedup_keys
                WHERE key = ANY(:keys) GROUP BY beneficiary_id ORDER BY shared DESC LIMIT :limit
            ) AS k
            JOIN beneficiaries AS b ON b.id = k.beneficiary_id
            WHERE b.status = ANY(:statuses) AND b.id IS DISTINCT FROM :exclude
            ORDER BY k.shared DESC
            """
        ).bindparams(bindparam("keys", type_=ARRAY(BigInteger)), bindparam("statuses", type_=ARRAY(Text)))
        ring = await keyring(self.session)
        rows = (
            await self.session.execute(
                stmt,
                {
                    "keys": [ring.key_hash(k) for k in keys],
                    "limit": limit,
                    "statuses": list(MATCHABLE_STATUSES),
                    "exclude": exclude,
                },
            )
        ).all()
        await ring.require(self.session, {row.key_version for row in rows})
        return [(row.id, open_profile(ring, row.id, row.key_version, row.data_key, row.profile)) for row in rows]

    async def filed_under(self, keys: Sequence[str]) -> dict[uuid.UUID, tuple[MatchRecord, list[str]]]:
        """Every matchable person filed under any of `keys`, with the ones they share: a bulk chunk's
        candidates in one query (one row per person, so no profile is sent or decoded twice)."""
        if not keys:
            return {}
        ring = await keyring(self.session)
        by_hash = {ring.key_hash(k): k for k in keys}
        stmt = text(
            """
            SELECT b.id, b.key_version, b.data_key, b.profile, k.keys
            FROM (
                SELECT beneficiary_id, array_agg(key) AS keys FROM dedup_keys
                WHERE key = ANY(:keys) GROUP BY beneficiary_id
            ) AS k
            JOIN beneficiaries AS b ON b.id = k.beneficiary_id
            WHERE b.status = ANY(:statuses)
            """
        ).bindparams(bindparam("keys", type_=ARRAY(BigInteger)), bindparam("statuses", type_=ARRAY(Text)))
        rows = (await self.session.execute(stmt, {"keys": list(by_hash), "statuses": list(MATCHABLE_STATUSES)})).all()
        await ring.require(self.session, {row.key_version for row in rows})
        return {
            row.id: (
                open_profile(ring, row.id, row.key_version, row.data_key, row.profile),
                [by_hash[h] for h in row.keys if h in by_hash],
            )
            for row in rows
        }

    async def add(self, beneficiary: Beneficiary, keys: Sequence[str] = ()) -> Beneficiary:
        """Insert a new person (its server-set timestamps come back with the INSERT) and file its keys."""
        await super().add(beneficiary)
        await self._file([(k, beneficiary.id) for k in keys])
        return beneficiary

    async def add_many(self, rows: Sequence[dict[str, Any]], keys: Sequence[tuple[str, uuid.UUID]]) -> None:
        """New people and their keys (key, person), one bulk statement each."""
        if rows:
            await self.session.execute(insert(BENEFICIARIES), list(rows))
        await self._file(keys)

    async def replace_keys(self, beneficiary_id: uuid.UUID, keys: Sequence[str]) -> None:
        await self.drop_keys(beneficiary_id)
        await self._file([(k, beneficiary_id) for k in keys])

    async def _file(self, keys: Sequence[tuple[str, uuid.UUID]]) -> None:
        """File people under their keys (keyed digests) in one statement, whatever their number."""
        ring = await keyring(self.session)
        pairs = list(dict.fromkeys((ring.key_hash(k), i) for k, i in keys))  # a hash collision must not repeat a row
        if pairs:
            await self.session.execute(
                text("INSERT INTO dedup_keys (key, beneficiary_id) SELECT * FROM unnest(:keys, :ids)").bindparams(
                    bindparam("keys", type_=ARRAY(BigInteger)), bindparam("ids", type_=ARRAY(Uuid))
                ),
                {"keys": [h for h, _ in pairs], "ids": [i for _, i in pairs]},
            )

    async def drop_keys(self, beneficiary_id: uuid.UUID) -> None:
        """A record that is no longer matchable leaves the blocking index."""
        await self.session.execute(delete(DedupKey).where(DedupKey.beneficiary_id == beneficiary_id))

    async def list(
        self,
        *,
        after_id: uuid.UUID | None,
        limit: int,
        status: str | None,
        programme_id: uuid.UUID | None,
        external_ref: str | None,
    ) -> Sequence[Beneficiary]:
        stmt = select(Beneficiary)
        if status is not None:
            stmt = stmt.where(Beneficiary.status == status)
        if external_ref is not None:
            stmt = stmt.where(
                Beneficiary.external_ref_index == external_ref_index(await keyring(self.session), external_ref)
            )
        if programme_id is not None:
            enrolled = select(Enrolment.beneficiary_id).where(Enrolment.programme_id == programme_id)
            stmt = stmt.where(Beneficiary.id.in_(enrolled))
        return await self.page(stmt, after_id, limit)

    async def many(self, ids: Sequence[uuid.UUID]) -> Sequence[Beneficiary]:
        stmt = select(Beneficiary).where(Beneficiary.id.in_(ids)).order_by(Beneficiary.id)
        return (await self.session.execute(stmt)).scalars().all()

    async def matchable_profiles(
        self, *, programme_id: uuid.UUID | None, after: uuid.UUID | None, limit: int
    ) -> builtins.list[tuple[uuid.UUID, dict[str, Any]]]:
        """A page of matchable people's stored match profiles in id order (of one programme's enrolled
        people, if given): what models are trained on and sweeps compare."""
        stmt = select(Beneficiary.id, Beneficiary.key_version, Beneficiary.data_key, Beneficiary.profile).where(
            Beneficiary.status.in_(MATCHABLE_STATUSES)
        )
        if programme_id is not None:
            enrolled = select(Enrolment.beneficiary_id).where(Enrolment.programme_id == programme_id)
            stmt = stmt.where(Beneficiary.id.in_(enrolled))
        if after is not None:
            stmt = stmt.where(Beneficiary.id > after)
        rows = (await self.session.execute(stmt.order_by(Beneficiary.id).limit(limit))).all()
        ring = await keyring(self.session)
        await ring.require(self.session, {row.key_version for row in rows})
        return [(row.id, profile_dict(ring, row.id, row.key_version, row.data_key, row.profile)) for row in rows]

    async def match_records(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, MatchRecord]:
        """The stored match records of those of these people who are matchable."""
        if not ids:
            return {}
        stmt = select(Beneficiary.id, Beneficiary.key_version, Beneficiary.data_key, Beneficiary.profile).where(
            Beneficiary.id.in_(ids), Beneficiary.status.in_(MATCHABLE_STATUSES)
        )
        rows = (await self.session.execute(stmt)).all()
        ring = await keyring(self.session)
        await ring.require(self.session, {row.key_version for row in rows})
        return {row.id: open_profile(ring, row.id, row.key_version, row.data_key, row.profile) for row in rows}

    async def hold_for_adjudication(self, ids: Sequence[uuid.UUID]) -> builtins.list[uuid.UUID]:
        """Active people among these become `pending_adjudication`; returns whose status changed."""
        if not ids:
            return []
        stmt = (
            update(Beneficiary)
            .where(Beneficiary.id.in_(ids), Beneficiary.status == "active")
            .values(status="pending_adjudication", updated_at=func.now())
            .returning(Beneficiary.id)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def programme_exists(self, programme_id: uuid.UUID) -> bool:
        """Whether the programme exists (its table is programmes', read here, never written)."""
        stmt = text("SELECT EXISTS (SELECT 1 FROM programmes WHERE id = :id)")
        return bool((await self.session.execute(stmt, {"id": programme_id})).scalar_one())

    async def sealed_under_other(self, version: int, limit: int) -> builtins.list[Any]:
        """People whose data a version other than `version` seals, locked; those a registration or a
        correction holds are skipped and found by a later pass."""
        stmt = (
            select(
                Beneficiary.id, Beneficiary.key_version, Beneficiary.data_key, Beneficiary.personal, Beneficiary.profile
            )
            .where(Beneficiary.key_version != version)
            .order_by(Beneficiary.key_version, Beneficiary.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return builtins.list((await self.session.execute(stmt)).all())

    async def count_sealed_under_other(self, version: int) -> int:
        stmt = select(func.count()).select_from(Beneficiary).where(Beneficiary.key_version != version)
        return int((await self.session.execute(stmt)).scalar_one())

    async def reseal(self, version: int, rows: Sequence[tuple[uuid.UUID, bytes, bytes | None, bytes | None]]) -> None:
        """(id, data key, personal, profile) sealed again under `version`, in one statement."""
        if not rows:
            return
        stmt = text(
            """
            UPDATE beneficiaries AS b
               SET key_version = :version, data_key = u.data_key, personal = u.personal, profile = u.profile
              FROM unnest(:ids, :keys, :personals, :profiles) AS u(id, data_key, personal, profile)
             WHERE b.id = u.id
            """
        ).bindparams(
            bindparam("ids", type_=ARRAY(Uuid)),
            bindparam("keys", type_=ARRAY(LargeBinary)),
            bindparam("personals", type_=ARRAY(LargeBinary)),
            bindparam("profiles", type_=ARRAY(LargeBinary)),
        )
        await self.session.execute(
            stmt,
            {
                "version": version,
                "ids": [r[0] for r in rows],
                "keys": [r[1] for r in rows],
                "personals": [r[2] for r in rows],
                "profiles": [r[3] for r in rows],
            },
        )

    async def inactive_since(self, cutoff: datetime, limit: int) -> builtins.list[uuid.UUID]:
        """People not erased with no activity since `cutoff` (registration, correction, enrolment, a change
        of one of their entitlements) and no entitlement that can still move, locked (skipping those locked)."""
        stmt = text(
            """
            SELECT b.id FROM beneficiaries AS b
             WHERE b.status <> 'erased' AND greatest(b.created_at, b.updated_at) < :cutoff
               AND NOT EXISTS (SELECT 1 FROM enrolments AS e WHERE e.beneficiary_id = b.id AND e.created_at >= :cutoff)
               AND NOT EXISTS (
                   SELECT 1 FROM entitlements AS t
                    WHERE t.beneficiary_id = b.id AND (t.updated_at >= :cutoff OR t.status IN ('pending', 'submitted'))
               )
             ORDER BY b.id LIMIT :limit
               FOR UPDATE OF b SKIP LOCKED
            """
        )
        rows = await self.session.execute(stmt, {"cutoff": cutoff, "limit": limit})
        return [row.id for row in rows]

    async def statuses_for_share(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        """Statuses, locked against a concurrent deactivation until the enrolment (or the payment) commits."""
        stmt = select(Beneficiary.id, Beneficiary.status).where(Beneficiary.id.in_(ids)).with_for_update(read=True)
        return {row.id: row.status for row in await self.session.execute(stmt)}


class AdjudicationRepository(Repository[Adjudication]):
    model = Adjudication
    not_found = "Adjudication not found."

    async def open(self, beneficiary_id: uuid.UUID, matches: list[dict[str, Any]]) -> None:
        """Open an adjudication, or refresh the matches of the one already open for this person (at most one
        is open: partial unique index), so a corrected record is judged on its current evidence."""
        stmt = pg_insert(Adjudication).values(beneficiary_id=beneficiary_id, matches=matches, status="open")
        await self.session.execute(
            stmt.on_conflict_do_update(
                index_elements=["beneficiary_id"],
                index_where=text("status = 'open'"),
                set_={"matches": stmt.excluded.matches},
            )
        )

    async def open_many(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self.session.execute(
                pg_insert(ADJUDICATIONS).on_conflict_do_nothing(
                    index_elements=["beneficiary_id"], index_where=text("status = 'open'")
                ),
                [{**row, "status": "open"} for row in rows],
            )

    async def open_ids(self, beneficiary_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
        """The open adjudication of each of these people that has one (person -> adjudication), locked
        until the transaction ends, in id order as every locker of adjudications takes them."""
        if not beneficiary_ids:
            return {}
        stmt = (
            select(Adjudication.beneficiary_id, Adjudication.id)
            .where(Adjudication.status == "open", Adjudication.beneficiary_id.in_(beneficiary_ids))
            .order_by(Adjudication.id)
            .with_for_update()
        )
        return {row.beneficiary_id: row.id for row in await self.session.execute(stmt)}

    async def claim_pairs(
        self, pairs: Sequence[tuple[uuid.UUID, uuid.UUID, uuid.UUID]]
    ) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """Claim (low, high, adjudication) pairs for adjudication and return those claimed now: not claimed
        before (the primary key decides, in one statement), both people still matchable, and no adjudication
        of either already naming the other (one opened at registration)."""
        if not pairs:
            return []
        stmt = text(
            """
            INSERT INTO adjudication_pairs (low_id, high_id, adjudication_id)
            SELECT c.low_id, c.high_id, c.adjudication_id
            FROM unnest(:lows, :highs, :adjudications) AS c(low_id, high_id, adjudication_id)
            JOIN beneficiaries AS l ON l.id = c.low_id AND l.status = ANY(:statuses)
            JOIN beneficiaries AS h ON h.id = c.high_id AND h.status = ANY(:statuses)
            WHERE NOT EXISTS (
                SELECT 1 FROM adjudications AS a
                WHERE (a.beneficiary_id = c.high_id
                       AND a.matches @> jsonb_build_array(jsonb_build_object('beneficiary_id', c.low_id::text)))
                   OR (a.beneficiary_id = c.low_id
                       AND a.matches @> jsonb_build_array(jsonb_build_object('beneficiary_id', c.high_id::text)))
            )
            ON CONFLICT DO NOTHING
            RETURNING low_id, high_id
            """
        ).bindparams(
            bindparam("lows", type_=ARRAY(Uuid)),
            bindparam("highs", type_=ARRAY(Uuid)),
            bindparam("adjudications", type_=ARRAY(Uuid)),
            bindparam("statuses", type_=ARRAY(Text)),
        )
        rows = await self.session.execute(
            stmt,
            {
                "lows": [p[0] for p in pairs],
                "highs": [p[1] for p in pairs],
                "adjudications": [p[2] for p in pairs],
                "statuses": list(MATCHABLE_STATUSES),
            },
        )
        return [(row.low_id, row.high_id) for row in rows]

    async def open_with_ids(self, rows: Sequence[dict[str, Any]]) -> None:
        """New open adjudications with their ids chosen by the caller (`id`, `beneficiary_id`, `matches`)."""
        if rows:
            await self.session.execute(insert(ADJUDICATIONS), [{**row, "status": "open"} for row in rows])

    async def add_matches(self, adjudication_id: uuid.UUID, matches: list[dict[str, Any]]) -> None:
        """More matches for an open adjudication, after those it lists."""
        await self.session.execute(
            update(Adjudication)
            .where(Adjudication.id == adjudication_id)
            .values(matches=Adjudication.matches.op("||")(bindparam("extra", matches, type_=JSONB)))
        )

    async def withdraw_open(self, beneficiary_id: uuid.UUID) -> None:
        await self.session.execute(
            update(Adjudication)
            .where(Adjudication.beneficiary_id == beneficiary_id, Adjudication.status == "open")
            .values(status="withdrawn")
        )

    async def list(self, *, after_id: uuid.UUID | None, limit: int, status: str | None) -> Sequence[Adjudication]:
        stmt = select(Adjudication)
        if status is not None:
            stmt = stmt.where(Adjudication.status == status)
        return await self.page(stmt, after_id, limit)


class EnrolmentRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def of_beneficiary(self, beneficiary_id: uuid.UUID) -> Sequence[Enrolment]:
        stmt = select(Enrolment).where(Enrolment.beneficiary_id == beneficiary_id).order_by(Enrolment.id)
        return (await self.session.execute(stmt)).scalars().all()

    async def enrol(self, programme_id: uuid.UUID, ids: Sequence[uuid.UUID], by: uuid.UUID) -> set[uuid.UUID]:
        """Insert enrolments; those already there are left alone. Returns who was newly enrolled."""
        if not ids:
            return set()
        stmt = (
            pg_insert(Enrolment)
            .on_conflict_do_nothing(constraint="uq_enrolments_programme_beneficiary")
            .returning(Enrolment.beneficiary_id)
        )
        rows = await self.session.execute(
            stmt, [{"programme_id": programme_id, "beneficiary_id": i, "enrolled_by": by} for i in ids]
        )
        return set(rows.scalars().all())


class ImportRepository(Repository[BeneficiaryImport]):
    model = BeneficiaryImport
    not_found = "Import not found."
    server_set = ("created_at", "status", "rows_done")

    async def add_chunk(self, import_id: uuid.UUID, seq: int, data: bytes) -> None:
        """Store a piece of the file sealed under the active key version."""
        ring = await keyring(self.session)
        version = await ring.active(self.session)
        sealed = ring.seal(version, data, chunk_aad(import_id, seq))
        await self.session.execute(
            insert(ImportChunk).values(import_id=import_id, seq=seq, key_version=version, data=sealed)
        )

    async def chunk(self, import_id: uuid.UUID, seq: int) -> bytes | None:
        stmt = select(ImportChunk.key_version, ImportChunk.data).where(
            ImportChunk.import_id == import_id, ImportChunk.seq == seq
        )
        row = (await self.session.execute(stmt)).one_or_none()
        if row is None:
            return None
        ring = await keyring(self.session)
        await ring.require(self.session, [row.key_version])
        return ring.open(row.key_version, row.data, chunk_aad(import_id, seq))

    async def add_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            await self.session.execute(insert(IMPORT_ROWS), list(rows))

    async def rows(
        self, import_id: uuid.UUID, *, after: int | None, limit: int, outcome: str | None
    ) -> Sequence[ImportRow]:
        stmt = select(ImportRow).where(ImportRow.import_id == import_id)
        if outcome is not None:
            stmt = stmt.where(ImportRow.outcome == outcome)
        return await self.page(stmt, after, limit, key=ImportRow.row_number)

    async def list(self, *, before_id: uuid.UUID | None, limit: int, status: str | None) -> Sequence[BeneficiaryImport]:
        """Imports, newest first."""
        stmt = select(BeneficiaryImport)
        if status is not None:
            stmt = stmt.where(BeneficiaryImport.status == status)
        return await self.page(stmt, before_id, limit, descending=True)

    async def rows_through(self, import_id: uuid.UUID) -> int:
        """The last row with an outcome (0 for none): where a resumed import goes on from."""
        stmt = select(func.coalesce(func.max(ImportRow.row_number), 0)).where(ImportRow.import_id == import_id)
        return int((await self.session.execute(stmt)).scalar_one())

    async def chunks_under_other(self, version: int, limit: int) -> Sequence[Any]:
        stmt = (
            select(ImportChunk.import_id, ImportChunk.seq, ImportChunk.key_version, ImportChunk.data)
            .where(ImportChunk.key_version != version)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return (await self.session.execute(stmt)).all()

    async def count_chunks_under_other(self, version: int) -> int:
        stmt = select(func.count()).select_from(ImportChunk).where(ImportChunk.key_version != version)
        return int((await self.session.execute(stmt)).scalar_one())

    async def reseal_chunk(self, import_id: uuid.UUID, seq: int, version: int, data: bytes) -> None:
        await self.session.execute(
            update(ImportChunk)
            .where(ImportChunk.import_id == import_id, ImportChunk.seq == seq)
            .values(key_version=version, data=data)
        )

    async def drop_file(self, import_id: uuid.UUID) -> None:
        """The uploaded file holds PII; it is not kept once every row has its outcome."""
        await self.session.execute(delete(ImportChunk).where(ImportChunk.import_id == import_id))


async def stream_row_errors(
    engine: AsyncEngine, import_id: uuid.UUID
) -> AsyncGenerator[Sequence[tuple[int, list[dict[str, str]]]], None]:
    """(row number, field errors) of the import's invalid rows in row order, in batches, from one read snapshot."""
    stmt = (
        select(ImportRow.row_number, ImportRow.errors)
        .where(ImportRow.import_id == import_id, ImportRow.outcome == "invalid")
        .order_by(ImportRow.row_number)
        .execution_options(yield_per=ERROR_BATCH)
    )
    async with read_snapshot(engine) as conn:
        result = await conn.stream(stmt)
        async for batch in result.partitions(ERROR_BATCH):
            yield [(number, errors) for number, errors in batch]
