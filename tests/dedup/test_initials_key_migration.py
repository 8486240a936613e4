"""The migration that files registered people under the initials key computes it as the Python does."""

from __future__ import annotations

import importlib.util
import json
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import text

from cbi_service.dedup.blocking import blocking_keys, key_hash
from cbi_service.dedup.normalize import build_record

MIGRATION = Path(__file__).resolve().parents[2] / "migrations" / "versions" / "2026_12_09_0014_initials_blocking_key.py"


def initials_sql() -> str:
    spec = importlib.util.spec_from_file_location("initials_migration", MIGRATION)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.INITIALS_KEY)


@pytest.mark.parametrize(
    ("given", "family", "born"),
    [
        ("Zoe", "Álvarez", date(1990, 11, 3)),
        ("Ana María", "Pérez", date(2001, 2, 28)),
        ("Íñigo", "Ñáñez", date(1975, 7, 7)),
    ],
)
async def test_sql_key_equals_the_python_key(session_factory, given, family, born):
    record = build_record(given_names=given, family_names=family, date_of_birth=born)
    expected = next(k for k in blocking_keys(record) if k.startswith("i:"))
    query = f"""
        SELECT ('x' || encode(substring(sha256(convert_to({initials_sql()}, 'UTF8')) for 8), 'hex'))::bit(64)::bigint
        FROM (SELECT left(p -> 'g' ->> 0, 1) COLLATE "C" AS g, left(p -> 'f' ->> 0, 1) COLLATE "C" AS f,
                     p ->> 'b' AS b FROM (SELECT CAST(:profile AS jsonb) AS p) AS s) AS people
    """
    async with session_factory() as session:
        value = (await session.execute(text(query), {"profile": json.dumps(record.to_profile())})).scalar_one()
    assert value == key_hash(expected)
