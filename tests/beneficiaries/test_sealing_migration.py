"""Migration 0016 seals a registry that was stored in clear, keeps it findable, and can go back."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import date

from alembic import command
from sqlalchemy import text

from cbi_service.beneficiaries.personal import open_personal
from cbi_service.beneficiaries.repository import BeneficiaryRepository
from cbi_service.dedup.blocking import blocking_keys, key_hash
from cbi_service.dedup.normalize import DocumentKey, build_record
from cbi_service.kit.crypto import keyring
from cbi_service.migrate import alembic_config

PERSON = uuid.UUID("01890000-0000-7000-8000-000000000001")
PRINCIPAL = uuid.UUID("01890000-0000-7000-8000-0000000000aa")


def _record():
    return build_record(
        given_names="Yolimar",
        family_names="Quintero Bastidas",
        date_of_birth=date(1991, 4, 12),
        sex="female",
        nationality="VE",
        documents=(DocumentKey("national_id", "VE", "18456723"),),
    )


async def _insert_in_clear(session_factory) -> None:
    record = _record()
    async with session_factory.begin() as session:
        await session.execute(
            text(
                """INSERT INTO beneficiaries (id, status, given_names, family_names, date_of_birth, sex, nationality,
                   phone, location_country, household_size, external_ref, consent_date, consent_purpose, documents,
                   match_profile, registered_by)
                   VALUES (:id, 'active', 'Yolimar', 'Quintero Bastidas', '1991-04-12', 'female', 'VE', '+573001234567',
                   'CO', 3, 'REF-7788', '2026-01-05', 'cash assistance', CAST(:docs AS jsonb), CAST(:profile AS jsonb),
                   :by)"""
            ),
            {
                "id": PERSON,
                "docs": json.dumps(
                    [{"type": "national_id", "number": "18.456.723", "issuing_country": "VE", "normalised": "18456723"}]
                ),
                "profile": json.dumps(record.to_profile()),
                "by": PRINCIPAL,
            },
        )
        for key in dict.fromkeys(key_hash(k) for k in blocking_keys(record)):
            await session.execute(text("INSERT INTO dedup_keys VALUES (:k, :b)"), {"k": key, "b": PERSON})
        await session.execute(
            text(
                "INSERT INTO idempotency_keys (principal_id, key, request_hash, response_status, response_body,"
                " expires_at) VALUES (:p, 'k1', 'h', 201, :body, now() + interval '1 day')"
            ),
            {"p": PRINCIPAL, "body": json.dumps({"id": str(PERSON), "given_names": "Yolimar"})},
        )
        await session.execute(
            text(
                "INSERT INTO audit_events (id, actor_name, action, resource_type, resource_id, after)"
                " VALUES (:id, 'registrar', 'beneficiary.registered', 'beneficiary', :b, CAST(:after AS jsonb))"
            ),
            {
                "id": uuid.uuid4(),
                "b": str(PERSON),
                "after": json.dumps({"status": "active", "external_ref": "REF-7788"}),
            },
        )


async def _dump(session_factory) -> str:
    tables = ("beneficiaries", "dedup_keys", "idempotency_keys", "audit_events")
    parts = []
    async with session_factory() as session:
        for table in tables:
            query = text(f"SELECT coalesce(json_agg(t)::text, '') FROM {table} AS t")
            parts.append((await session.execute(query)).scalar_one())
    return " ".join(parts)


async def test_a_registry_in_clear_is_sealed_stays_findable_and_goes_back(engine, session_factory, database_url):
    config = alembic_config(database_url)
    await engine.dispose()
    await asyncio.to_thread(command.downgrade, config, "0015_dedup_models_and_sweeps")
    await _insert_in_clear(session_factory)
    await engine.dispose()

    await asyncio.to_thread(command.upgrade, config, "head")
    dump = await _dump(session_factory)
    for clear in ("Yolimar", "Quintero", "18456723", "18.456.723", "3001234567", "REF-7788", "1991-04-12"):
        assert clear not in dump
    async with session_factory() as session:
        ring = await keyring(session)
        row = (await session.execute(text("SELECT * FROM beneficiaries"))).one()
        personal = open_personal(ring, row.id, row.key_version, row.data_key, row.personal)
        assert (personal.given_names, personal.phone, personal.external_ref) == ("Yolimar", "+573001234567", "REF-7788")
        assert row.birth_year == 1991
        candidates = await BeneficiaryRepository(session).candidates(blocking_keys(_record()), 10)
        assert [ident for ident, _ in candidates] == [PERSON]
        found = await BeneficiaryRepository(session).list(
            after_id=None, limit=10, status=None, programme_id=None, external_ref="REF-7788"
        )
        assert [b.id for b in found] == [PERSON]
    await engine.dispose()

    await asyncio.to_thread(command.downgrade, config, "0015_dedup_models_and_sweeps")
    async with session_factory() as session:
        row = (await session.execute(text("SELECT given_names, phone, external_ref FROM beneficiaries"))).one()
        body = (await session.execute(text("SELECT response_body FROM idempotency_keys"))).scalar_one()
        keys = set((await session.execute(text("SELECT key FROM dedup_keys"))).scalars())
    assert tuple(row) == ("Yolimar", "+573001234567", "REF-7788")
    assert json.loads(body)["given_names"] == "Yolimar"
    assert keys == {key_hash(k) for k in blocking_keys(_record())}
    await engine.dispose()
    await asyncio.to_thread(command.upgrade, config, "head")
