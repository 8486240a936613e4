"""`cbi-service keys generate|rotate|status`, run as an operator runs them."""

from __future__ import annotations

import base64

from sqlalchemy import text

from tests.beneficiaries.support import person_body
from tests.cli.support import cli, cli_env, raw_key


def test_generate_prints_a_key_the_service_accepts():
    result = cli("keys", "generate", env=cli_env())
    assert result.returncode == 0
    assert len(base64.b64decode(result.stdout.strip())) == 32


async def test_rotate_starts_a_rotation_under_an_admins_key_and_status_shows_it(
    database_url, client, api_key_factory, session_factory
):
    registrar = await api_key_factory("registrar")
    assert (await client.post("/v1/beneficiaries", json=person_body(), headers=registrar)).status_code == 201
    env = cli_env(DATABASE_URL=database_url)
    refused = cli("keys", "rotate", "--no-wait", "--api-key", raw_key(registrar), env=env)
    assert refused.returncode == 1
    admin = await api_key_factory("admin")
    started = cli("keys", "rotate", "--no-wait", "--api-key", raw_key(admin), env=env)
    assert started.returncode == 0, started.stderr
    assert "1 rows to seal again" in started.stdout
    status = cli("keys", "status", env=env)
    assert status.returncode == 0, status.stderr
    assert "records  retiring" in status.stdout
    assert "records  active" in status.stdout
    assert "last rotation" in status.stdout
    assert "running, 0/1" in status.stdout
    async with session_factory() as session:
        audited = await session.execute(
            text("SELECT count(*) FROM audit_events WHERE action = 'keys.rotation_started'")
        )
        assert audited.scalar_one() == 1
