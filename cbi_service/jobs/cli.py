"""`cbi-service jobs list|retry`: an operator's view of the job queue, and failed work put back in it."""

from __future__ import annotations

import asyncio
import uuid
from enum import StrEnum
from typing import Annotated

import typer

from cbi_service.kit.commands import ApiKeyOption, database, service_errors
from cbi_service.kit.settings import Settings

jobs_app = typer.Typer(help="See the background jobs and retry failed ones.", no_args_is_help=True)


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


@jobs_app.command("list")
def list_jobs(
    ctx: typer.Context,
    status: Annotated[JobStatus | None, typer.Option(help="Only jobs in this state.")] = None,
    kind: Annotated[str | None, typer.Option(help="Only jobs of this kind (e.g. beneficiaries.import).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many, newest first.")] = 50,
) -> None:
    """Newest first: id, status, attempts, kind, when created, and the last error (an exception's name)."""
    from cbi_service.jobs.repository import JobRepository
    from cbi_service.kit.db import standalone_sessions

    async def run(settings: Settings) -> None:
        async with standalone_sessions(settings) as sessions, sessions() as session:
            jobs = await JobRepository(session).recent(status=status.value if status else None, kind=kind, limit=limit)
        if not jobs:
            typer.echo("no jobs match", err=True)
            return
        typer.echo(f"{'id':36}  {'status':7}  {'attempts':8}  {'kind':32}  {'created':20}  last error")
        for job in jobs:
            created = job.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
            attempts = f"{job.attempts}/{job.max_attempts}"
            typer.echo(
                f"{job.id!s:36}  {job.status:7}  {attempts:8}  {job.kind:32}  {created:20}  {job.last_error or ''}"
            )

    with database(ctx) as settings:
        asyncio.run(run(settings))


@jobs_app.command("retry")
def retry(
    ctx: typer.Context,
    api_key: ApiKeyOption,
    job_id: Annotated[uuid.UUID | None, typer.Argument(help="The failed job's id (see `jobs list`).")] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed", help="Every failed job instead of one.")] = False,
    kind: Annotated[str | None, typer.Option(help="With --all-failed: only failed jobs of this kind.")] = None,
) -> None:
    """Put a failed job back in the queue with its attempts reset; audited under the key's holder (admin).

    Exits 1 when the job is not failed (a done job never runs again by hand), or a live job shares its dedupe key.
    """
    from cbi_service.auth.roles import Role
    from cbi_service.auth.service import authorize
    from cbi_service.jobs.service import retry_all_failed, retry_failed
    from cbi_service.kit.db import standalone_sessions

    if (job_id is None) == (not all_failed):
        raise typer.BadParameter("name one job, or pass --all-failed", param_hint="JOB_ID")
    if kind is not None and not all_failed:
        raise typer.BadParameter("--kind goes with --all-failed", param_hint="--kind")

    async def run(settings: Settings) -> bool:
        async with standalone_sessions(settings) as sessions, sessions.begin() as session:
            principal = await authorize(session, api_key, [Role.admin])
            if job_id is not None:
                job = await retry_failed(session, principal, job_id)
                typer.echo(f"job {job.id} ({job.kind}) queued again")
                return True
            retried, refused = await retry_all_failed(session, principal, kind=kind)
        for job in retried:
            typer.echo(f"job {job.id} ({job.kind}) queued again")
        for refusal in refused:
            typer.echo(f"cbi-service: {refusal.detail}", err=True)
        if not retried and not refused:
            typer.echo("no failed jobs", err=True)
        return not refused

    with service_errors(), database(ctx) as settings:
        if not asyncio.run(run(settings)):
            raise typer.Exit(1)
