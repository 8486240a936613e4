"""The registry as dedup's sweeps and training see it: matchable people's profiles, and adjudications
opened for the pairs a sweep found.

A sweep never changes a person's status: it only puts pairs before adjudicators, and their decision
(`service.decide_adjudication`) is what makes someone `duplicate` or `active`. Of a pair, the newer record
is the one under review (its registration is the one that would have been flagged), so its open
adjudication, if it has one, gets the older record as a further match; otherwise one is opened. A pair
goes to adjudication once, ever: it is claimed in `adjudication_pairs`, whose primary key decides
between a resumed sweep, a sweep run again and two sweeps at once. A pair an adjudication opened at
registration already names is not sent again.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cbi_service.audit.service import AuditEntry, record_audit_many
from cbi_service.beneficiaries.repository import AdjudicationRepository, BeneficiaryRepository
from cbi_service.dedup import service as dedup
from cbi_service.dedup.sweeps import FoundPair
from cbi_service.kit.ids import new_id


class BeneficiaryRegistry:
    """`dedup.service.Registry` over the beneficiaries' tables."""

    async def programme_exists(self, session: AsyncSession, programme_id: uuid.UUID) -> bool:
        return await BeneficiaryRepository(session).programme_exists(programme_id)

    async def profiles(
        self, session: AsyncSession, programme_id: uuid.UUID | None, after: uuid.UUID | None, limit: int
    ) -> list[tuple[uuid.UUID, dict[str, Any]]]:
        return await BeneficiaryRepository(session).matchable_profiles(
            programme_id=programme_id, after=after, limit=limit
        )

    async def open_adjudications(
        self, session: AsyncSession, sweep_id: uuid.UUID, pairs: Sequence[FoundPair]
    ) -> tuple[int, int]:
        return await open_sweep_adjudications(session, sweep_id, pairs)


async def open_sweep_adjudications(
    session: AsyncSession, sweep_id: uuid.UUID, pairs: Sequence[FoundPair]
) -> tuple[int, int]:
    """Adjudications for the pairs not already before an adjudicator: (adjudications opened, pairs sent)."""
    if not pairs:
        return 0, 0
    repo = AdjudicationRepository(session)
    reviewed = sorted({p.high_id for p in pairs})
    existing = await repo.open_ids(reviewed)
    target = {person: existing.get(person) or new_id() for person in reviewed}
    claimed = set(await repo.claim_pairs([(p.low_id, p.high_id, target[p.high_id]) for p in pairs]))
    matches: defaultdict[uuid.UUID, list[dict[str, Any]]] = defaultdict(list)
    for pair in sorted(pairs, key=lambda p: -p.match_probability):
        if (pair.low_id, pair.high_id) in claimed:
            matches[pair.high_id].append(
                {
                    "beneficiary_id": str(pair.low_id),
                    "registry": "internal",
                    "score": round(pair.match_probability, 4),
                    "matched_on": list(pair.matched_on),
                    "sweep_id": str(sweep_id),
                }
            )
    new = [
        {"id": target[person], "beneficiary_id": person, "matches": found}
        for person, found in matches.items()
        if person not in existing
    ]
    await repo.open_with_ids(new)
    events = [
        AuditEntry("adjudication.opened", "beneficiary", person, None,
                   {"adjudication_id": str(target[person]), "sweep_id": str(sweep_id), "matches": len(found)})
        for person, found in matches.items()
        if person not in existing
    ]  # fmt: skip
    for person, found in matches.items():
        if person in existing:
            await repo.add_matches(existing[person], found)
            events.append(
                AuditEntry("adjudication.matches_added", "beneficiary", person, None,
                           {"adjudication_id": str(existing[person]), "sweep_id": str(sweep_id),
                            "matches": len(found)})
            )  # fmt: skip
    await record_audit_many(session, None, events)
    return len(new), len(claimed)


dedup.use_registry(BeneficiaryRegistry())
