from __future__ import annotations

from sqlalchemy import text


async def test_healthz(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}


async def test_readyz_checks_database_and_migrations(client, engine):
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True, "migrations": True}
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM alembic_version"))
    behind = await client.get("/readyz")
    assert behind.status_code == 503
    assert behind.json()["checks"]["migrations"] is False


async def test_metrics_count_requests_by_route_template(client, api_key_factory):
    headers = await api_key_factory("auditor")
    await client.get("/v1/programmes/00000000-0000-0000-0000-000000000000", headers=headers)
    metrics = (await client.get("/metrics")).text
    assert 'cbi_http_requests_total{method="GET",route="/v1/programmes/{programme_id}",status="404"}' in metrics
    assert "cbi_http_request_duration_seconds_bucket" in metrics
