"""The registry as dedup's sweeps, training and registry re-checks see it: matchable people's profiles,
adjudications opened for the pairs a sweep found, for the people an external registry turned out to know,
and for those it never answered for.

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
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from adapters.registries.base import RegistryMatch
from cbi_service.audit.service import AuditEntry, record_audit_many
from cbi_service.beneficiaries.models import MATCHABLE_STATUSES
from cbi_service.beneficiaries.repository import AdjudicationRepository, BeneficiaryRepository
from cbi_service.dedup import service as dedup
from cbi_service.dedup.normalize import MatchRecord
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

    async def match_records(self, session: AsyncSession, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, MatchRecord]:
        return await BeneficiaryRepository(session).match_records(ids)

    async def flag_registry_matches(
        self, session: AsyncSession, registry: str, found: Mapping[uuid.UUID, Sequence[RegistryMatch]]
    ) -> int:
        return await flag_registry_matches(session, registry, found)

    async def refer_unanswered(self, session: AsyncSession, registry: str, attempts: Mapping[uuid.UUID, int]) -> int:
        return await refer_unanswered(session, registry, attempts)


async def flag_registry_matches(
    session: AsyncSession, registry: str, found: Mapping[uuid.UUID, Sequence[RegistryMatch]]
) -> int:
    """People an external registry knew, learnt on a re-check after it could not answer at registration: each
    gets the registry's matches in an adjudication (opened, or added to the one already open) and, if active,
    is held as `pending_adjudication` until an adjudicator decides, as the registration would have been (a
    document the registry holds too would have refused it, which can no longer be). Returns how many people
    were flagged; the still matchable only."""
    repo = AdjudicationRepository(session)
    people = sorted(found)
    existing = await repo.open_ids(people)
    statuses = await BeneficiaryRepository(session).statuses_for_share(people)
    people = [p for p in people if statuses.get(p) in MATCHABLE_STATUSES]
    held = set(await BeneficiaryRepository(session).hold_for_adjudication(people))
    events: list[AuditEntry] = []
    for person in people:
        matches = [
            {"registry_ref": m.registry_ref, "registry": m.registry, "score": round(m.score, 4),
             "matched_on": list(m.matched_on)}
            for m in found[person]
        ]  # fmt: skip
        summary = {"registry": registry, "matches": len(matches)}
        if person in existing:
            await repo.add_matches(existing[person], matches)
            events.append(AuditEntry("adjudication.matches_added", "beneficiary", person, None,
                                     {"adjudication_id": str(existing[person]), **summary}))  # fmt: skip
        else:
            adjudication_id = new_id()
            await repo.open_with_ids([{"id": adjudication_id, "beneficiary_id": person, "matches": matches}])
            events.append(AuditEntry("adjudication.opened", "beneficiary", person, None,
                                     {"adjudication_id": str(adjudication_id), **summary}))  # fmt: skip
        if person in held:
            events.append(AuditEntry("beneficiary.registry_match", "beneficiary", person, {"status": "active"},
                                     {"status": "pending_adjudication", **summary}))  # fmt: skip
    await record_audit_many(session, None, events)
    return len(people)


async def refer_unanswered(session: AsyncSession, registry: str, attempts: Mapping[uuid.UUID, int]) -> int:
    """People an external registry never answered for, however often it was asked after their registration
    (`attempts`): each gets an entry naming the registry and how often it was asked in an adjudication
    (opened, or added to the one already open), so a person decides what the registry could not confirm.
    Their status stays as it is, as it did when the registry could not answer at registration: a registry
    that fails holds nobody's assistance. Returns how many people were referred; the still matchable only."""
    repo = AdjudicationRepository(session)
    people = sorted(attempts)
    existing = await repo.open_ids(people)
    statuses = await BeneficiaryRepository(session).statuses_for_share(people)
    people = [p for p in people if statuses.get(p) in MATCHABLE_STATUSES]
    events: list[AuditEntry] = []
    for person in people:
        entry = {"registry": registry, "score": 0.0, "matched_on": [], "unanswered_attempts": attempts[person]}
        summary = {"registry": registry, "unanswered_attempts": attempts[person]}
        if person in existing:
            await repo.add_matches(existing[person], [entry])
            events.append(AuditEntry("adjudication.matches_added", "beneficiary", person, None,
                                     {"adjudication_id": str(existing[person]), **summary}))  # fmt: skip
        else:
            adjudication_id = new_id()
            await repo.open_with_ids([{"id": adjudication_id, "beneficiary_id": person, "matches": [entry]}])
            events.append(AuditEntry("adjudication.opened", "beneficiary", person, None,
                                     {"adjudication_id": str(adjudication_id), **summary}))  # fmt: skip
    await record_audit_many(session, None, events)
    return len(people)


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
