"""Key rotation: everything sealed again under the new version while registrations and reads go on, the
old version deleted only once nothing uses it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, timedelta

import pytest
from sqlalchemy import text

from cbi_service.beneficiaries.personal import Personal, sealed_columns
from cbi_service.beneficiaries.repository import BeneficiaryRepository
from cbi_service.dedup.blocking import blocking_keys
from cbi_service.dedup.normalize import build_record
from cbi_service.keys import service as keys
from cbi_service.kit import crypto
from cbi_service.kit.ids import new_id
from tests.beneficiaries.support import person_body

ROWS = 100_000
BULK = 5_000


async def _bulk_people(session_factory, count: int) -> None:
    """`count` sealed people written straight through the repository (registering them one by one through
    the API would take most of the test's time)."""
    async with session_factory() as session:
        ring = await crypto.keyring(session)
        version = await ring.active(session)
    for start in range(0, count, BULK):
        rows, keys_ = [], []
        for n in range(start, min(count, start + BULK)):
            ident = new_id()
            born = date(1950 + n % 60, 1 + n % 12, 1 + n % 28)
            record = build_record(given_names=f"Persona{n}", family_names=f"Apellido{n}", date_of_birth=born)
            personal = Personal(f"Persona{n}", f"Apellido{n}", born, None, f"BULK-{n}", [])
            rows.append(
                {
                    "id": ident, "status": "active", "sex": "female", "nationality": "VE", "location_country": "CO",
                    "household_size": 1, "consent_date": date(2026, 1, 1), "consent_purpose": "cash",
                    "registered_by": ident, **sealed_columns(ring, version, ident, personal, record),
                }
            )  # fmt: skip
            keys_.extend((k, ident) for k in blocking_keys(record)[:1])
        async with session_factory.begin() as session:
            await BeneficiaryRepository(session).add_many(rows, keys_)


async def _versions_used(session_factory) -> set[int]:
    async with session_factory() as session:
        query = text(
            "SELECT key_version FROM beneficiaries UNION SELECT key_version FROM idempotency_keys"
            " UNION SELECT key_version FROM beneficiary_import_chunks"
        )
        return set((await session.execute(query)).scalars())


async def test_rotation_under_load_leaves_nothing_on_the_old_version(
    client, api_key_factory, session_factory, monkeypatch
):
    monkeypatch.setattr(keys, "RETIRE_AFTER", timedelta(seconds=2 * crypto.ACTIVE_TTL))
    registrar = await api_key_factory("registrar")
    first = await client.post("/v1/beneficiaries", json=person_body(), headers={**registrar, "Idempotency-Key": "r-1"})
    assert first.status_code == 201
    await _bulk_people(session_factory, ROWS)
    (old,) = await _versions_used(session_factory)

    async with session_factory.begin() as session:
        rotation = await keys.start_rotation(session, None)
    assert rotation.total == ROWS + 2  # the people, and the stored response of the first registration

    async def load() -> int:
        done = 0
        while not rotating.done():
            n = uuid.uuid4().int % 10**8
            # Names are letters (dedup reads no digits in a name) and birth dates differ: distinct people.
            letters = "".join(chr(ord("a") + int(d)) for d in f"{n:08d}")
            body = person_body(
                given_names=f"Carga {letters}", family_names=f"Prueba {letters[::-1]}", external_ref=f"LOAD-{n}",
                date_of_birth=f"{1940 + n % 60}-{1 + n % 12:02d}-{1 + n % 28:02d}",
                documents=[{"type": "passport", "number": f"P{n:08d}", "issuing_country": "VE"}], phone=None,
            )  # fmt: skip
            made = await client.post("/v1/beneficiaries", json=body, headers=registrar)
            assert made.status_code == 201, made.text
            read = await client.get(f"/v1/beneficiaries/{made.json()['id']}", headers=registrar)
            assert read.status_code == 200
            assert read.json()["given_names"] == f"Carga {letters}"
            replay = await client.post(
                "/v1/beneficiaries", json=person_body(), headers={**registrar, "Idempotency-Key": "r-1"}
            )
            assert replay.json()["id"] == first.json()["id"]
            done += 1
        return done

    rotating = asyncio.ensure_future(keys.run_rotation(session_factory, rotation.id, lambda: None))
    served = await load()
    await rotating
    assert served > 0
    assert await _versions_used(session_factory) == {rotation.to_version}
    async with session_factory() as session:
        stored = await crypto.versions_in_use(session)
        assert old not in {version for version, _, _ in stored}
        done = (await session.execute(text("SELECT status, done FROM key_rotations"))).one()
    assert done.status == "completed"
    assert done.done >= ROWS + 2
    found = await client.get("/v1/beneficiaries", params={"external_ref": "BULK-77"}, headers=registrar)
    assert [p["given_names"] for p in found.json()["items"]] == ["Persona77"]


async def test_a_version_still_in_use_cannot_be_deleted(client, api_key_factory, session_factory):
    registrar = await api_key_factory("registrar")
    assert (await client.post("/v1/beneficiaries", json=person_body(), headers=registrar)).status_code == 201
    async with session_factory.begin() as session:
        ring = await crypto.keyring(session)
        _, retiring = await crypto.add_records_version(session, ring)
    async with session_factory.begin() as session:
        assert not await crypto.retire(session, retiring[0])


async def test_a_second_rotation_waits_for_the_first(session_factory):
    async with session_factory.begin() as session:
        await keys.start_rotation(session, None)
    with pytest.raises(keys.Conflict):
        async with session_factory.begin() as session:
            await keys.start_rotation(session, None)
