"""`cbi-service jobs list|retry`: the queue as an operator sees it, and failed work put back, audited."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from cbi_service.audit.models import AuditEvent
from cbi_service.jobs.models import Job
from cbi_service.jobs.repository import JobRepository
from tests.cli.support import ANSI, cli, cli_env, invoke, raw_key


async def _job(session_factory, kind: str, status: str, **values) -> uuid.UUID:
    finished = {"finished_at": datetime.now(UTC)} if status in {"done", "failed"} else {}
    async with session_factory.begin() as session:
        job_id = await JobRepository(session).insert(
            {"kind": kind, "payload": {}, "status": status, **finished, **values}
        )
    assert job_id is not None
    return job_id


async def _get(session_factory, job_id: uuid.UUID) -> Job:
    async with session_factory() as session:
        job = await session.get(Job, job_id)
    assert job is not None
    return job


async def _audit(session_factory, job_id: uuid.UUID) -> list[AuditEvent]:
    async with session_factory() as session:
        stmt = select(AuditEvent).where(AuditEvent.resource_type == "job", AuditEvent.resource_id == str(job_id))
        return list((await session.execute(stmt)).scalars())


def _ids(listing: str) -> list[str]:
    return [row.split()[0] for row in listing.splitlines()[1:]]


@pytest.fixture
async def admin_key(api_key_factory) -> str:
    return raw_key(await api_key_factory("admin", name="ops on call"))


async def test_list_filters_by_status_and_kind_newest_first(session_factory, database_url):
    failed_import = await _job(session_factory, "beneficiaries.import", "failed", attempts=5, last_error="OSError")
    failed_issue = await _job(session_factory, "issuance.lane", "failed", attempts=10, last_error="TimeoutError")
    done = await _job(session_factory, "issuance.lane", "done", attempts=1)

    everything = await invoke("jobs", "list", DATABASE_URL=database_url)
    failed = await invoke("jobs", "list", "--status", "failed", DATABASE_URL=database_url)
    failed_imports = await invoke(
        "jobs", "list", "--status", "failed", "--kind", "beneficiaries.import", DATABASE_URL=database_url
    )
    newest = await invoke("jobs", "list", "--limit", "1", DATABASE_URL=database_url)
    unknown = await invoke("jobs", "list", "--status", "lost", DATABASE_URL=database_url)

    assert everything.exit_code == 0, everything.stderr
    assert _ids(everything.stdout) == [str(done), str(failed_issue), str(failed_import)]
    assert set(_ids(failed.stdout)) == {str(failed_import), str(failed_issue)}
    assert "10/10" in failed.stdout
    assert "TimeoutError" in failed.stdout
    assert _ids(failed_imports.stdout) == [str(failed_import)]
    assert _ids(newest.stdout) == [str(done)]
    assert unknown.exit_code == 2


async def test_retry_requeues_a_failed_job_with_attempts_reset_and_audits_it(session_factory, database_url, admin_key):
    job_id = await _job(session_factory, "issuance.lane", "failed", attempts=10, last_error="TimeoutError")

    result = await invoke("jobs", "retry", str(job_id), DATABASE_URL=database_url, CBI_API_KEY=admin_key)

    assert result.exit_code == 0, result.stderr
    assert f"job {job_id} (issuance.lane) queued again" in result.stdout
    job = await _get(session_factory, job_id)
    assert (job.status, job.attempts, job.finished_at, job.locked_by) == ("queued", 0, None, None)
    (event,) = await _audit(session_factory, job_id)
    assert (event.action, event.actor_name) == ("job.retried", "ops on call")
    assert event.before == {"status": "failed", "attempts": 10, "last_error": "TimeoutError"}
    assert event.after == {"status": "queued", "attempts": 0}


@pytest.mark.parametrize("status", ["done", "queued", "running"])
async def test_retry_of_a_job_that_is_not_failed_is_refused(session_factory, database_url, admin_key, status):
    job_id = await _job(session_factory, "issuance.lane", status, attempts=1)

    result = await invoke("jobs", "retry", str(job_id), DATABASE_URL=database_url, CBI_API_KEY=admin_key)

    assert result.exit_code == 1
    assert f"is {status}, not failed" in result.stderr
    job = await _get(session_factory, job_id)
    assert (job.status, job.attempts) == (status, 1)
    assert await _audit(session_factory, job_id) == []


async def test_a_refused_retry_says_why_in_plain_text_on_a_pipe(session_factory, database_url, admin_key):
    """The real process, stdout and stderr piped: a message and exit status 1, no traceback, no colour codes."""
    job_id = await _job(session_factory, "issuance.lane", "done", attempts=1)

    result = cli("jobs", "retry", str(job_id), env=cli_env(DATABASE_URL=database_url, CBI_API_KEY=admin_key))

    assert result.returncode == 1
    assert result.stderr.strip() == f"cbi-service: Job {job_id} is done, not failed: only a failed job can be retried."
    assert ANSI not in result.stdout + result.stderr


async def test_retry_of_an_unknown_job_is_refused(database_url, admin_key):
    result = await invoke("jobs", "retry", str(uuid.uuid4()), DATABASE_URL=database_url, CBI_API_KEY=admin_key)
    assert result.exit_code == 1
    assert "No job" in result.stderr


async def test_retry_is_refused_while_a_live_job_holds_the_same_dedupe_key(session_factory, database_url, admin_key):
    failed = await _job(session_factory, "beneficiaries.import", "failed", attempts=5, dedupe_key="import:1")
    await _job(session_factory, "beneficiaries.import", "queued", dedupe_key="import:1")

    result = await invoke("jobs", "retry", str(failed), DATABASE_URL=database_url, CBI_API_KEY=admin_key)

    assert result.exit_code == 1
    assert "same dedupe key" in result.stderr
    assert (await _get(session_factory, failed)).status == "failed"


async def test_retry_needs_an_admin_key(session_factory, database_url, api_key_factory):
    job_id = await _job(session_factory, "issuance.lane", "failed", attempts=10)
    officer = raw_key(await api_key_factory("programme_officer", "finance"))

    without = await invoke("jobs", "retry", str(job_id), DATABASE_URL=database_url)
    wrong_role = await invoke("jobs", "retry", str(job_id), DATABASE_URL=database_url, CBI_API_KEY=officer)
    made_up = await invoke("jobs", "retry", str(job_id), "--api-key", "cbi_nope", DATABASE_URL=database_url)

    assert without.exit_code == 2
    assert "--api-key" in without.stderr
    assert wrong_role.exit_code == 1
    assert "admin" in wrong_role.stderr
    assert made_up.exit_code == 1
    assert "valid API key" in made_up.stderr
    assert (await _get(session_factory, job_id)).status == "failed"


async def test_retry_all_failed_puts_back_every_failed_job_of_a_kind(session_factory, database_url, admin_key):
    lanes = [await _job(session_factory, "issuance.lane", "failed", attempts=10) for _ in range(2)]
    other = await _job(session_factory, "beneficiaries.import", "failed", attempts=5)
    done = await _job(session_factory, "issuance.lane", "done", attempts=1)

    result = await invoke(
        "jobs", "retry", "--all-failed", "--kind", "issuance.lane", DATABASE_URL=database_url, CBI_API_KEY=admin_key
    )

    assert result.exit_code == 0, result.stderr
    assert [(await _get(session_factory, j)).status for j in lanes] == ["queued", "queued"]
    assert (await _get(session_factory, other)).status == "failed"
    assert (await _get(session_factory, done)).status == "done"
    assert [len(await _audit(session_factory, j)) for j in lanes] == [1, 1]


async def test_retry_all_failed_reports_the_jobs_it_could_not_put_back(session_factory, database_url, admin_key):
    blocked = await _job(session_factory, "beneficiaries.import", "failed", attempts=5, dedupe_key="import:2")
    await _job(session_factory, "beneficiaries.import", "running", dedupe_key="import:2")
    free = await _job(session_factory, "issuance.lane", "failed", attempts=10)

    result = await invoke("jobs", "retry", "--all-failed", DATABASE_URL=database_url, CBI_API_KEY=admin_key)

    assert result.exit_code == 1
    assert f"job {free} (issuance.lane) queued again" in result.stdout
    assert str(blocked) in result.stderr
    assert (await _get(session_factory, free)).status == "queued"
    assert (await _get(session_factory, blocked)).status == "failed"


@pytest.mark.parametrize(
    "args", [["retry"], ["retry", str(uuid.uuid4()), "--all-failed"], ["retry", str(uuid.uuid4()), "--kind", "x"]]
)
async def test_retry_takes_one_job_or_all_failed(args):
    result = await invoke("jobs", *args, CBI_API_KEY="cbi_x")
    assert result.exit_code == 2
