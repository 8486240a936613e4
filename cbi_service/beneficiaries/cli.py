"""`cbi-service import FILE`: a bulk registration from the command line, the same import the API runs.

The file is stored and queued by `imports.start_import` (what `POST /v1/beneficiaries/imports` calls), then
run here by a worker that takes import jobs only, while a progress bar follows the import's committed
chunks. A `serve` or `worker` running against the same database may take the job instead; the bar follows
it all the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Annotated

import typer

from cbi_service.kit.commands import ApiKeyOption, database, service_errors
from cbi_service.kit.settings import Settings

if TYPE_CHECKING:
    from cbi_service.beneficiaries.models import BeneficiaryImport

POLL_SECONDS = 0.2
FINISHED = frozenset({"completed", "failed"})


async def import_and_follow(
    settings: Settings, path: Path, api_key: str, on_progress: Callable[[BeneficiaryImport], None]
) -> BeneficiaryImport:
    """Store and queue the file under the key's holder (a registrar), then run and follow the import until
    it finishes; `on_progress` sees the import after every poll."""
    from fastapi import UploadFile

    from cbi_service.auth.roles import Role
    from cbi_service.auth.service import authorize
    from cbi_service.beneficiaries.imports import JOB_KIND, start_import
    from cbi_service.beneficiaries.repository import ImportRepository
    from cbi_service.beneficiaries.tasks import run_import  # noqa: F401 - registers the job's handler
    from cbi_service.jobs.worker import Worker
    from cbi_service.kit.db import standalone_sessions

    async with standalone_sessions(settings) as sessions:
        async with sessions.begin() as session:
            principal = await authorize(session, api_key, [Role.registrar])
            with path.open("rb") as handle:
                accepted = await start_import(session, settings, principal, UploadFile(handle, filename=path.name))
        stop = asyncio.Event()
        worker = Worker(
            sessions,
            SimpleNamespace(settings=settings),
            concurrency=1,
            poll_seconds=settings.worker_poll_seconds,
            kinds=[JOB_KIND],
        )
        working = asyncio.create_task(worker.run(stop))
        try:
            while True:
                async with sessions() as session:
                    imp = await ImportRepository(session).require(accepted.id)
                on_progress(imp)
                if imp.status in FINISHED:
                    return imp
                await asyncio.sleep(POLL_SECONDS)
        finally:
            stop.set()
            await working


def import_file(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="A CSV or XLSX file with the import template's columns."
        ),
    ],
    api_key: ApiKeyOption,
) -> None:
    """Register a file of people as POST /v1/beneficiaries/imports does, and follow it to its end.

    A progress bar goes to stderr, then the counts per outcome to stdout.

    Exits 0 once the import completed (refused rows are counted, never fatal), 1 when refused or failed.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from cbi_service.kit.logging import configure_logging

    with service_errors(), database(ctx) as settings:
        configure_logging(settings.effective_log_format, "WARNING")
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        bars: list[TaskID] = []

        def show(imp: BeneficiaryImport) -> None:
            if not bars:  # the file is stored and queued: from here on there is progress to show
                progress.start()
                bars.append(progress.add_task(f"importing {file.name}", total=None))
            progress.update(bars[0], total=imp.rows_total, completed=imp.rows_done)

        try:
            imp = asyncio.run(import_and_follow(settings, file, api_key, show))
        finally:
            progress.stop()
    _summary(imp)


def _summary(imp: BeneficiaryImport) -> None:
    typer.echo(f"import {imp.id}: {imp.status}, {imp.rows_done} rows")
    for outcome in ("created", "pending_adjudication", "duplicate", "invalid"):
        typer.echo(f"  {outcome:22} {imp.counts.get(outcome, 0):>9}")
    if imp.counts.get("invalid"):
        typer.echo(f"rows refused, with their errors: GET /v1/beneficiaries/imports/{imp.id}/errors.csv")
    if imp.status == "failed":
        typer.echo(f"cbi-service: the import failed: {imp.error}", err=True)
        raise typer.Exit(1)
