"""`/metrics`: every route labelled by its template, and gauges read from the database at scrape time that a
slow database cannot hold up."""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import asyncpg
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from cbi_service.entitlements.models import ENTITLEMENT_STATUSES
from cbi_service.health.metrics import WAIT_SECONDS
from cbi_service.jobs.service import enqueue
from cbi_service.jobs.worker import load_handlers
from cbi_service.kit.middleware import UNMATCHED
from tests.conftest import libpq_url

PLACEHOLDER = "0000000a-0000-4000-8000-00000000000a"
DOCS_PAGES = ("/docs", "/redoc", "/docs/oauth2-redirect", "/openapi.json")


def samples(exposition: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples called `name`, by their sorted labels."""
    found = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def labelled(exposition: str) -> set[tuple[str, str]]:
    return {
        (dict(labels)["method"], dict(labels)["route"]) for labels in samples(exposition, "cbi_http_requests_total")
    }


async def test_every_route_is_labelled_by_its_template_never_by_its_path(app, client):
    asked: set[tuple[str, str]] = set()
    for template, operations in app.openapi()["paths"].items():
        path = re.sub(r"\{[^}]+\}", PLACEHOLDER, template)
        for method in operations:
            await client.request(method.upper(), path)
            asked.add((method.upper(), template))
    for page in DOCS_PAGES:
        assert (await client.get(page)).status_code == 200, page
        asked.add(("GET", page))
    assert (await client.get("/docs/static/swagger-ui.css")).status_code == 200
    asked.add(("GET", "/docs/static/{path}"))
    await client.get(f"/v1/nothing/{PLACEHOLDER}")
    await client.delete("/healthz")

    seen = labelled((await client.get("/metrics")).text)
    assert asked <= seen, sorted(asked - seen)
    assert ("GET", UNMATCHED) in seen
    assert ("DELETE", "/healthz") in seen  # 405: the route matched, the method did not
    assert not [route for _, route in seen if PLACEHOLDER in route or "nothing" in route]


async def test_a_method_the_client_made_up_is_labelled_other_never_by_its_text(client):
    """The method is the one label a client writes itself: anything it sends there (a secret pasted into the
    wrong place) would otherwise be served to every scraper, each as a new series."""
    made_up = "WHSEC_C2VJCMV0IG9MIHRHZSB3ZWJOB29R"
    await client.request(made_up, "/healthz")
    await client.get("/healthz")

    exposition = (await client.get("/metrics")).text

    assert made_up not in exposition
    assert ("other", "/healthz") in labelled(exposition)
    assert ("GET", "/healthz") in labelled(exposition)


async def test_gauges_show_the_queue_failed_jobs_entitlements_and_imports(client, session_factory):
    load_handlers()
    async with session_factory.begin() as session:
        for _ in range(3):
            await enqueue(session, "disbursement.issue", {"batch_id": PLACEHOLDER, "lane": 0})
        await enqueue(session, "beneficiaries.import", {"import_id": PLACEHOLDER})
        await session.execute(
            text(
                "UPDATE jobs SET status = 'failed', finished_at = now() WHERE id IN "
                "(SELECT id FROM jobs WHERE kind = 'disbursement.issue' LIMIT 1)"
            )
        )
        await session.execute(
            text("UPDATE jobs SET run_at = now() - interval '90 seconds' WHERE kind = 'disbursement.issue'")
        )
        await session.execute(
            text(
                "INSERT INTO beneficiary_imports (id, status, filename, file_format, rows_total, rows_done, counts,"
                " created_by) VALUES (:id, 'running', 'lista.csv', 'csv', 100, 40, '{}', :by)"
            ),
            {"id": uuid.uuid4(), "by": uuid.uuid4()},
        )

    exposition = (await client.get("/metrics")).text

    depth = samples(exposition, "cbi_job_queue_depth")
    assert depth[("kind", "disbursement.issue"), ("status", "queued")] == 2
    assert depth[("kind", "disbursement.issue"), ("status", "running")] == 0
    assert depth[("kind", "beneficiaries.import"), ("status", "queued")] == 1
    assert samples(exposition, "cbi_jobs_failed")[(("kind", "disbursement.issue"),)] == 1
    assert samples(exposition, "cbi_job_queue_wait_seconds")[(("kind", "disbursement.issue"),)] >= 89
    entitlements = samples(exposition, "cbi_entitlements")
    assert {dict(labels)["status"] for labels in entitlements} == set(ENTITLEMENT_STATUSES)
    assert set(entitlements.values()) == {0}
    assert samples(exposition, "cbi_imports_running") == {(): 1}
    assert samples(exposition, "cbi_import_rows_done") == {(): 40}
    assert samples(exposition, "cbi_import_rows_expected") == {(): 100}
    assert samples(exposition, "cbi_gauges_age_seconds")[()] < WAIT_SECONDS


async def test_a_slow_database_never_holds_a_scrape_up(client, session_factory, database_url):
    load_handlers()
    async with session_factory.begin() as session:
        await enqueue(session, "disbursement.issue", {"batch_id": PLACEHOLDER, "lane": 0})
    first = (await client.get("/metrics")).text
    queued = (("kind", "disbursement.issue"), ("status", "queued"))
    assert samples(first, "cbi_job_queue_depth")[queued] == 1

    blocker = await asyncpg.connect(libpq_url(database_url))
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        stalled = (await client.get("/metrics")).text
        took = time.monotonic() - started
        assert took < WAIT_SECONDS + 1.5, took
        assert samples(stalled, "cbi_job_queue_depth")[queued] == 1, "the last figures, not none"
        assert samples(stalled, "cbi_gauges_age_seconds")[()] >= WAIT_SECONDS * 0.9
        assert samples(stalled, "cbi_http_requests_total"), "the counters are all there"
        another = "INSERT INTO jobs (id, kind, payload) VALUES ($1, 'disbursement.issue', '{}')"
        await blocker.execute(another, uuid.uuid4())
        await transaction.commit()
    finally:
        await blocker.close()

    deadline = time.monotonic() + 10
    while samples((fresh := (await client.get("/metrics")).text), "cbi_job_queue_depth")[queued] != 2:
        assert time.monotonic() < deadline, "the figures were never read again"
        await asyncio.sleep(0.1)
    assert samples(fresh, "cbi_gauges_age_seconds")[()] < WAIT_SECONDS
