"""Builders the dedup tests share: a match model made by hand (training needs a thousand records and a
minute; what most tests check does not depend on the weights being learned), labelled synthetic records,
and people stored straight in the registry."""

from __future__ import annotations

import uuid
from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cbi_service.dedup.comparisons import COMPARISONS
from cbi_service.dedup.model import MatchModel
from cbi_service.dedup.normalize import MatchRecord
from cbi_service.kit.ids import new_id
from tests.support import sealed_person

# m and u per level after "missing", strongest agreement first: plausible, not learned.
HAND_M = {
    "given_names": [0.80, 0.08, 0.05, 0.02, 0.03, 0.02],
    "family_names": [0.75, 0.08, 0.10, 0.05, 0.02],
    "date_of_birth": [0.84, 0.02, 0.04, 0.05, 0.01, 0.01, 0.01, 0.02],
    "documents": [0.90, 0.06, 0.01, 0.03],
    "sex": [0.97, 0.03],
    "nationality": [0.97, 0.03],
}
HAND_U = {
    "given_names": [0.01, 0.005, 0.01, 0.002, 0.05, 0.923],
    "family_names": [0.005, 0.003, 0.01, 0.08, 0.902],
    "date_of_birth": [0.0005, 0.0001, 0.0002, 0.001, 0.0005, 0.01, 0.04, 0.9477],
    "documents": [0.00001, 0.0001, 0.001, 0.99889],
    "sex": [0.5, 0.5],
    "nationality": [0.6, 0.4],
}


def hand_model(version: str = "hand-1", prior: float = 0.0005) -> MatchModel:
    return MatchModel(
        version=version,
        prior=prior,
        m={c.name: [None, *HAND_M[c.name]] for c in COMPARISONS},
        u={c.name: [None, *HAND_U[c.name]] for c in COMPARISONS},
        tf={"given_names": {"maria": 0.05}, "family_names": {"garcia": 0.03}},
        trained={"by": "hand"},
    )


def registry_records(count: int, *, seed: int = 5, duplicate_share: float = 0.2) -> list[tuple[int, MatchRecord]]:
    """`count` labelled synthetic records (person id, match record): households, and corrupted second
    registrations of some people, from the benchmark's generator."""
    from benchmarks.registry_generator import FastRegistry

    return list(FastRegistry(seed, duplicate_share=duplicate_share).records(count))


async def insert_people(
    session_factory: async_sessionmaker[AsyncSession], records: list[MatchRecord], *, status: str = "active"
) -> list[uuid.UUID]:
    """Store people straight in the registry as a merge of partner lists would (no dedup at the door), in
    the given order (ids are time-ordered): their ids."""
    from cbi_service.beneficiaries.repository import BeneficiaryRepository
    from cbi_service.dedup.blocking import blocking_keys

    ids = [new_id() for _ in records]
    async with session_factory() as session:
        rows = [
            {
                "id": ident,
                "status": status,
                "sex": record.sex,
                "nationality": record.nationality or "VE",
                "location_country": "CO",
                "household_size": 1,
                "consent_date": date(2026, 11, 1),
                "consent_purpose": "test",
                "registered_by": REGISTRAR,
                **await sealed_person(
                    session, ident, " ".join(record.given) or "x", " ".join(record.family) or "x",
                    record.date_of_birth, phone=record.phone, record=record,
                ),
            }
            for ident, record in zip(ids, records, strict=True)
        ]  # fmt: skip
    keys = [(key, ident) for ident, record in zip(ids, records, strict=True) for key in blocking_keys(record)]
    async with session_factory.begin() as session:
        await BeneficiaryRepository(session).add_many(rows, keys)
    return ids


REGISTRAR = uuid.UUID("00000000-0000-7000-8000-000000000001")
