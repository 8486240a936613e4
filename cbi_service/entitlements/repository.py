"""Entitlement persistence. Creating, freezing and cancelling a batch's entitlements are set-based SQL so
100,000 beneficiaries take one statement each, and the one-live-entitlement-per-programme-cycle rule is
enforced by the partial unique index `uq_entitlements_live_per_cycle` (INSERT ... ON CONFLICT DO NOTHING),
never by a prior read."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    ARRAY,
    BigInteger,
    DateTime,
    Row,
    Text,
    Uuid,
    any_,
    bindparam,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm.util import identity_key

from cbi_service.entitlements.models import LIVE_PREDICATE, OPEN_STATUSES, Entitlement, EntitlementEvent
from cbi_service.kit.repository import Repository
from cbi_service.programmes.models import VOUCHER_MECHANISMS, Programme

_UUIDS = ARRAY(Uuid())


class LockedVoucher(NamedTuple):
    """What a spend of a voucher is judged by, read under its row lock: a plain tuple, not an ORM object (an
    offline sync locks ten thousand)."""

    id: uuid.UUID
    programme_id: uuid.UUID
    currency: str
    status: str
    remaining_minor: int
    expires_at: datetime | None
    voucher_code: str | None
    voucher_token: str | None
    """The token the agency signed, if it is a paper voucher (`vouchers.tokens`)."""

    @property
    def signed(self) -> bool:
        return self.voucher_token is not None


_SIGNED_VOUCHER = (Entitlement.id, Entitlement.programme_id, Entitlement.currency, Entitlement.voucher_token)
ANALYZE_AFTER_ROWS = 1000

ELIGIBLE_ENROLLED = """
    eligible AS (
        SELECT b.id FROM enrolments en JOIN beneficiaries b ON b.id = en.beneficiary_id
         WHERE en.programme_id = :programme AND b.status = 'active'
    )
"""
"""Who a batch over the whole programme may pay: its enrolled, active people (a CTE named `eligible`)."""
ELIGIBLE_LISTED = """
    eligible AS (
        SELECT b.id FROM unnest(:ids) AS r(id) JOIN beneficiaries b ON b.id = r.id
          JOIN enrolments en ON en.beneficiary_id = b.id AND en.programme_id = :programme
         WHERE b.status = 'active'
    )
"""
"""Who a batch over a list (`:ids`) may pay: the listed people who are enrolled and active."""
_AMOUNT = """
    CASE WHEN CAST(:flat AS bigint) IS NOT NULL THEN CAST(:flat AS bigint)
         ELSE LEAST(CAST(:base AS bigint) + CAST(:per_member AS bigint) * b.household_size,
                    COALESCE(CAST(:cap AS bigint), 9223372036854775807))
    END
"""
_INSERT = f"""
    INSERT INTO entitlements (id, batch_id, programme_id, beneficiary_id, cycle, currency, amount_minor)
    SELECT cbi_uuid7(), CAST(:batch AS uuid), CAST(:programme AS uuid), b.id, CAST(:cycle AS text),
           CAST(:currency AS text), {_AMOUNT}
      FROM beneficiaries b
     WHERE b.id IN (SELECT eligible.id FROM eligible)
     ORDER BY b.id
    ON CONFLICT (programme_id, cycle, beneficiary_id) WHERE {LIVE_PREDICATE} DO NOTHING
"""  # noqa: S608 - constant fragments, values bound
_CANCEL_INACTIVE = """
    WITH gone AS (
        UPDATE entitlements e SET status = 'cancelled', updated_at = now()
          FROM beneficiaries b
         WHERE e.batch_id = :batch AND e.status = 'pending'
           AND b.id = e.beneficiary_id AND b.status <> 'active'
        RETURNING e.id, e.beneficiary_id
    ),
    history AS (
        INSERT INTO entitlement_events (id, entitlement_id, from_status, to_status, actor, detail)
        SELECT cbi_uuid7(), gone.id, 'pending', 'cancelled', CAST(:actor AS text),
               '{"reason": "beneficiary not active"}'
          FROM gone
    )
    SELECT gone.beneficiary_id FROM gone
"""
_REPRICE = f"""
    UPDATE entitlements e SET amount_minor = {_AMOUNT}, updated_at = now()
      FROM beneficiaries b
     WHERE e.batch_id = :batch AND e.status = 'pending' AND b.id = e.beneficiary_id
       AND e.amount_minor <> {_AMOUNT}
"""  # noqa: S608 - constant fragments, values bound
_CANCEL_PENDING = """
    WITH gone AS (
        UPDATE entitlements SET status = 'cancelled', updated_at = now()
         WHERE batch_id = :batch AND status = 'pending'
        RETURNING id, amount_minor
    ),
    history AS (
        INSERT INTO entitlement_events (id, entitlement_id, from_status, to_status, actor, detail)
        SELECT cbi_uuid7(), gone.id, 'pending', 'cancelled', CAST(:actor AS text), CAST(:detail AS jsonb) FROM gone
    )
    SELECT count(*), COALESCE(sum(amount_minor), 0) FROM gone
"""
_SUBMIT = text(
    """
    WITH moved AS (
        UPDATE entitlements AS e
           SET status = 'submitted', provider_ref = v.ref, submitted_at = now(), updated_at = now()
          FROM unnest(:ids, :refs) AS v(id, ref)
         -- `e.id = ANY` lets the planner find the chunk's rows by primary key, not by scanning every
         -- pending row of the batch for each chunk.
         WHERE e.id = v.id AND e.id = ANY (:ids) AND e.status = 'pending'
        RETURNING e.id
    )
    INSERT INTO entitlement_events (id, entitlement_id, from_status, to_status, actor)
    SELECT cbi_uuid7(), moved.id, 'pending', 'submitted', :source FROM moved
    RETURNING entitlement_id
    """
).bindparams(bindparam("ids", type_=_UUIDS), bindparam("refs", type_=ARRAY(Text())), bindparam("source", type_=Text()))
_ISSUE_MANY = text(
    """
    WITH v AS (
        SELECT * FROM unnest(:ids, :froms, :refs, :tokens, :last4s, :codes, :vtokens, :expires, :ats)
                   AS v(id, prev, ref, token, last4, code, vtoken, expires, at)
    ),
    moved AS (
        UPDATE entitlements AS e
           SET status = 'issued', provider_ref = v.ref, card_token = v.token, card_last4 = v.last4,
               voucher_code = v.code, voucher_token = v.vtoken, expires_at = v.expires, issued_at = v.at,
               updated_at = now(), failure_reason = NULL, failure_retryable = NULL
          FROM v
         WHERE e.id = v.id
        RETURNING e.id, e.amount_minor, v.prev, v.ref
    ),
    history AS (
        INSERT INTO entitlement_events (id, entitlement_id, from_status, to_status, actor, detail)
        SELECT cbi_uuid7(), moved.id, moved.prev, 'issued', :source, jsonb_build_object('provider_ref', moved.ref)
          FROM moved
    )
    SELECT moved.id, moved.amount_minor, moved.prev, moved.ref FROM moved
    """
).bindparams(
    bindparam("ids", type_=_UUIDS),
    *(bindparam(name, type_=ARRAY(Text())) for name in ("froms", "refs", "tokens", "last4s", "codes", "vtokens")),
    *(bindparam(name, type_=ARRAY(DateTime(timezone=True))) for name in ("expires", "ats")),
    bindparam("source", type_=Text()),
)
"""One statement moves a chunk to `issued` and writes its history rows."""
_SPEND = text(
    """
    UPDATE entitlements AS e
       SET redeemed_minor = e.redeemed_minor + v.spent, status = 'redeemed', updated_at = now()
      FROM unnest(:ids, :spent) AS v(id, spent)
     WHERE e.id = v.id AND e.id = ANY (:ids)
    """
).bindparams(bindparam("ids", type_=_UUIDS), bindparam("spent", type_=ARRAY(BigInteger())))
"""One statement records what a set of vouchers' redemptions spent (rows locked by the caller)."""
_OVERDUE = text(
    """
    WITH due AS (
        SELECT id FROM entitlements
         WHERE status = 'submitted'
           AND COALESCE(checked_at, submitted_at) < now() - make_interval(secs => :after)
         ORDER BY submitted_at LIMIT :limit
           FOR UPDATE SKIP LOCKED
    )
    UPDATE entitlements e SET checked_at = now()
      FROM due, programmes p
     WHERE e.id = due.id AND p.id = e.programme_id
    RETURNING e.id, p.provider
    """
)


class EntitlementRepository(Repository[Entitlement]):
    model = Entitlement

    async def lock_many(self, entitlement_ids: Sequence[uuid.UUID]) -> Sequence[Entitlement]:
        """Lock rows in id order (two chunks locking overlapping rows never deadlock)."""
        stmt = (
            select(Entitlement)
            .where(Entitlement.id.in_(entitlement_ids))
            .order_by(Entitlement.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def list(
        self,
        *,
        after_id: uuid.UUID | None,
        limit: int,
        batch_id: uuid.UUID | None,
        beneficiary_id: uuid.UUID | None,
        status: str | None,
    ) -> Sequence[Entitlement]:
        stmt = select(Entitlement)
        if batch_id is not None:
            stmt = stmt.where(Entitlement.batch_id == batch_id)
        if beneficiary_id is not None:
            stmt = stmt.where(Entitlement.beneficiary_id == beneficiary_id)
        if status is not None:
            stmt = stmt.where(Entitlement.status == status)
        return await self.page(stmt, after_id, limit)

    async def of_beneficiary(self, beneficiary_id: uuid.UUID) -> Sequence[Entitlement]:
        stmt = select(Entitlement).where(Entitlement.beneficiary_id == beneficiary_id).order_by(Entitlement.id)
        return (await self.session.execute(stmt)).scalars().all()

    async def open_of_beneficiary(self, beneficiary_id: uuid.UUID) -> int:
        """How many of the person's entitlements are pending or submitted: money that can still move."""
        stmt = select(func.count()).where(
            Entitlement.beneficiary_id == beneficiary_id, Entitlement.status.in_(OPEN_STATUSES)
        )
        return int((await self.session.execute(stmt)).scalar_one())

    async def history(self, entitlement_id: uuid.UUID) -> Sequence[EntitlementEvent]:
        stmt = (
            select(EntitlementEvent)
            .where(EntitlementEvent.entitlement_id == entitlement_id)
            .order_by(EntitlementEvent.id)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def count_events(self, entitlement_id: uuid.UUID, to_status: str) -> int:
        """How many times the entitlement moved to `to_status` (failures count against the retry budget)."""
        stmt = select(func.count()).where(
            EntitlementEvent.entitlement_id == entitlement_id, EntitlementEvent.to_status == to_status
        )
        return int((await self.session.execute(stmt)).scalar_one())

    @staticmethod
    def stamp_updated(entitlement: Entitlement) -> None:
        """Mark the row changed at the transaction's time (written with the row's next flush)."""
        entitlement.updated_at = func.now()

    async def add_events(self, rows: Iterable[dict[str, Any]]) -> None:
        values = list(rows)
        if values:
            await self.session.execute(insert(EntitlementEvent), values)

    async def counts_by_batch(self, batch_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
        if not batch_ids:
            return {}
        stmt = (
            select(Entitlement.batch_id, Entitlement.status, func.count())
            .where(Entitlement.batch_id.in_(batch_ids))
            .group_by(Entitlement.batch_id, Entitlement.status)
        )
        counts: dict[uuid.UUID, dict[str, int]] = {batch_id: {} for batch_id in batch_ids}
        for batch_id, status, count in (await self.session.execute(stmt)).all():
            counts[batch_id][status] = count
        return counts

    async def create_pending(self, terms: dict[str, Any], beneficiary_ids: Sequence[uuid.UUID] | None) -> None:
        """One pending entitlement per eligible beneficiary not already paid in the cycle (`terms`: batch,
        programme, cycle, currency and the amount parameters flat, base, per_member, cap)."""
        if beneficiary_ids is None:
            inserted = await self.session.execute(text(f"WITH {ELIGIBLE_ENROLLED} {_INSERT}"), terms)
        else:
            stmt = text(f"WITH {ELIGIBLE_LISTED} {_INSERT}").bindparams(bindparam("ids", type_=_UUIDS))
            inserted = await self.session.execute(stmt, {**terms, "ids": list(beneficiary_ids)})
        if cast(CursorResult[Any], inserted).rowcount >= ANALYZE_AFTER_ROWS:
            # A bulk load: until autovacuum gets to it (a minute or more), the planner would believe almost
            # no entitlement is pending and plan the issuance's per-chunk updates as scans of every pending
            # row, quadratic in the batch. ANALYZE counts this transaction's own new rows.
            await self.session.execute(text("ANALYZE entitlements"))

    async def cancel_inactive(self, batch_id: uuid.UUID, actor: str) -> builtins.list[uuid.UUID]:
        """Cancel the batch's pending entitlements of people no longer active; returns those people."""
        gone = await self.session.execute(text(_CANCEL_INACTIVE), {"batch": batch_id, "actor": actor})
        return list(gone.scalars())

    async def reprice(self, terms: dict[str, Any]) -> None:
        """Price the batch's pending entitlements again from current household sizes."""
        keys = ("batch", "flat", "base", "per_member", "cap")
        await self.session.execute(text(_REPRICE), {key: terms[key] for key in keys})

    async def cancel_pending(self, batch_id: uuid.UUID, actor: str, reason: str) -> tuple[int, int]:
        """Cancel every still-pending entitlement of the batch; returns (how many, their total)."""
        detail = f'{{"reason": "{reason}"}}'
        count, total = (
            await self.session.execute(text(_CANCEL_PENDING), {"batch": batch_id, "actor": actor, "detail": detail})
        ).one()
        return int(count), int(total)

    async def pending_totals(self, batch_id: uuid.UUID) -> tuple[int, int]:
        """How many of the batch's entitlements are pending, and their total."""
        stmt = select(func.count(), func.coalesce(func.sum(Entitlement.amount_minor), 0)).where(
            Entitlement.batch_id == batch_id, Entitlement.status == "pending"
        )
        count, total = (await self.session.execute(stmt)).one()
        return int(count), int(total)

    async def to_follow_up(self, batch_id: uuid.UUID) -> builtins.list[uuid.UUID]:
        """The beneficiaries of the batch's failed and expired entitlements."""
        stmt = (
            select(Entitlement.beneficiary_id)
            .where(Entitlement.batch_id == batch_id, Entitlement.status.in_(("failed", "expired")))
            .order_by(Entitlement.beneficiary_id)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def submit(self, accepted: Sequence[tuple[uuid.UUID, str | None]], source: str) -> builtins.list[uuid.UUID]:
        """Move still-pending rows to `submitted` with their provider_ref, history included."""
        params = {"ids": [i for i, _ in accepted], "refs": [ref for _, ref in accepted], "source": source}
        return list((await self.session.execute(_SUBMIT, params)).scalars())

    async def issue_many(self, params: dict[str, Any]) -> Sequence[Row[Any]]:
        """Move a chunk to `issued` with its history rows; returns (id, amount_minor, prev, ref) per row moved."""
        return (await self.session.execute(_ISSUE_MANY, params)).all()

    async def claim_overdue(self, after_seconds: float, limit: int) -> Sequence[Row[Any]]:
        """Submitted entitlements not heard of for `after_seconds`, stamped as checked now; (id, provider)."""
        return (await self.session.execute(_OVERDUE, {"after": after_seconds, "limit": limit})).all()

    async def claim_pending(self, batch_id: uuid.UUID, limit: int) -> builtins.list[Entitlement]:
        """The batch's next pending entitlements, locked; rows another lane holds are skipped, not awaited."""
        stmt = (
            select(Entitlement)
            .where(Entitlement.batch_id == batch_id, Entitlement.status == "pending")
            .order_by(Entitlement.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def lock_vouchers(
        self, entitlement_ids: Sequence[uuid.UUID], codes: Sequence[str] = ()
    ) -> builtins.list[LockedVoucher]:
        """Lock the rows of the ids and of the signed vouchers with these codes, in id order (two merchants'
        redemptions of overlapping vouchers never deadlock), the ids and codes bound as arrays however many
        there are (an offline sync brings thousands)."""
        wanted = Entitlement.id == any_(bindparam("ids", list(entitlement_ids), type_=_UUIDS))
        if codes:
            by_code = select(Entitlement.id).where(
                Entitlement.voucher_code == any_(bindparam("codes", list(codes), type_=ARRAY(Text()))),
                Entitlement.voucher_token.is_not(None),
            )
            wanted = or_(wanted, Entitlement.id.in_(by_code))
        stmt = (
            select(
                Entitlement.id,
                Entitlement.programme_id,
                Entitlement.currency,
                Entitlement.status,
                (Entitlement.amount_minor - Entitlement.redeemed_minor).label("remaining_minor"),
                Entitlement.expires_at,
                Entitlement.voucher_code,
                Entitlement.voucher_token,
            )
            .where(wanted)
            .order_by(Entitlement.id)
            .with_for_update()
        )
        return [LockedVoucher(*row) for row in await self.session.execute(stmt)]

    async def spend(self, spent: dict[uuid.UUID, int]) -> None:
        """Raise each voucher's `redeemed_minor` by what was spent of it, marking it redeemed. The statement
        bypasses the ORM: any of these vouchers the session had loaded is expired, never read stale."""
        if spent:
            await self.session.execute(_SPEND, {"ids": list(spent), "spent": list(spent.values())})
            for entitlement_id in spent:
                loaded = self.session.identity_map.get(identity_key(Entitlement, entitlement_id))
                if loaded is not None:
                    self.session.expire(loaded)

    async def signed_vouchers(
        self, entitlement_ids: Sequence[uuid.UUID]
    ) -> Sequence[Row[uuid.UUID, uuid.UUID, str, str]]:
        """(id, programme_id, currency, voucher_token) of those of the ids that are vouchers the agency signed."""
        # By id alone, the unsigned left out here: with `voucher_token IS NOT NULL` in the query, statistics from
        # before a batch was issued (all tokens null) make the planner walk the partial index on voucher codes,
        # every signed voucher of it, for each lookup.
        stmt = select(*_SIGNED_VOUCHER).where(
            Entitlement.id == any_(bindparam("ids", list(entitlement_ids), type_=_UUIDS))
        )
        rows = (await self.session.execute(stmt)).all()
        return [cast(Row[uuid.UUID, uuid.UUID, str, str], row) for row in rows if row.voucher_token is not None]

    async def printable_vouchers(
        self, batch_id: uuid.UUID, after_id: uuid.UUID | None, limit: int
    ) -> builtins.list[Any]:
        """The batch's issued vouchers the agency signed, in id order after `after_id`: (id, beneficiary_id,
        voucher_code, voucher_token, amount_minor, currency, expires_at)."""
        stmt = select(
            Entitlement.id,
            Entitlement.beneficiary_id,
            Entitlement.voucher_code,
            Entitlement.voucher_token,
            Entitlement.amount_minor,
            Entitlement.currency,
            Entitlement.expires_at,
        ).where(
            Entitlement.batch_id == batch_id,
            Entitlement.status == "issued",
            Entitlement.voucher_token.is_not(None),
        )
        if after_id is not None:
            stmt = stmt.where(Entitlement.id > after_id)
        return list((await self.session.execute(stmt.order_by(Entitlement.id).limit(limit))).all())

    async def programme(self, programme_id: uuid.UUID) -> Programme | None:
        return await self.session.get(Programme, programme_id)

    async def due_vouchers(self, limit: int) -> builtins.list[uuid.UUID]:
        """Issued vouchers with value left whose validity (counted from issue) has run out."""
        expires_at = func.coalesce(
            Entitlement.expires_at,
            Entitlement.issued_at + func.make_interval(0, 0, 0, Programme.voucher_validity_days),
        )
        stmt = (
            select(Entitlement.id)
            .join(Programme, Programme.id == Entitlement.programme_id)
            .where(
                Entitlement.status.in_([literal_column("'issued'"), literal_column("'redeemed'")]),
                Entitlement.redeemed_minor < Entitlement.amount_minor,
                Programme.delivery_mechanism.in_([literal_column(repr(m)) for m in VOUCHER_MECHANISMS]),
                expires_at <= func.now(),
            )
            .order_by(Entitlement.id)
            .limit(limit)
        )
        return list((await self.session.execute(stmt)).scalars())
