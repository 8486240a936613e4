"""`cbi-service registry hash`: what a partner agency runs on its own machine to share its caseload safely;
`cbi-service registry-sim`: a DCI registry answering from a caseload, for tests and demos;
`cbi-service dedup train|sweep`: the match model learned from the registry, and registry-wide sweeps."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cbi_service.kit.commands import ApiKeyOption, database, service_errors
from cbi_service.kit.settings import Settings

if TYPE_CHECKING:
    from adapters.registries.dci_simulator import SimRecord
    from cbi_service.dedup.models import DedupSweep

registry_app = typer.Typer(help="Work with external registries shared between agencies.", no_args_is_help=True)


@registry_app.command("hash")
def hash_command(
    source: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The caseload (CSV or XLSX).")
    ],
    destination: Annotated[Path, typer.Argument(dir_okay=False, help="Where to write the hashed list.")],
    key: Annotated[
        str,
        typer.Option(
            "--key",
            envvar="CBI_REGISTRY_HASH_KEY",
            help="The hashing key agreed between agencies (or CBI_REGISTRY_HASH_KEY, kept out of shell history).",
        ),
    ],
) -> None:
    """Turn a caseload file (CSV or XLSX, read as imports read it) into a list of keyed hashes holding no
    personal data. Configure the output on the receiving side as a `hashed_list` entry of CBI_REGISTRIES.

    Exit status: 0 when every row was hashed; 1 when the list was written but some rows could not be read
    (no given names, family names or birth date, a date in another format than YYYY-MM-DD or DD/MM/YYYY, an
    invalid document): how many, why and which row numbers are printed, never a value; 2 when nothing was
    written (the file's encoding cannot be told, its header lacks a column, or the key is empty).
    """
    from adapters.registries.base import RegistryConfigError
    from cbi_service.dedup.registries import hash_registry_file
    from cbi_service.kit.settings import Settings
    from cbi_service.kit.tabular import TableLimits, UnreadableFile

    limits = TableLimits.of(Settings(), max_rows=sys.maxsize)  # hashing streams: no caseload is too long
    try:
        summary = hash_registry_file(source, destination, key, limits)
    except (RegistryConfigError, UnreadableFile) as exc:
        typer.echo(f"{source.name} was not hashed: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"hashed {summary.people} people into {summary.keys} keys: {destination}")
    if summary.skipped:
        typer.echo(f"{summary.skipped} rows could not be read and are not in the list:", err=True)
        for reason, (count, rows) in sorted(summary.reasons.items(), key=lambda item: (-item[1][0], item[0])):
            more = ", ..." if count > len(rows) else ""
            typer.echo(f"  {count} rows, {reason} (rows {', '.join(map(str, rows))}{more})", err=True)
        raise typer.Exit(1)


def registry_sim(
    records: Annotated[
        Path,
        typer.Option(
            exists=True, dir_okay=False, readable=True, help="The caseload it holds (CSV or XLSX, the import columns)."
        ),
    ],
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one (printed on stdout).")] = 8950,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="CBI_SIM_API_KEY", show_envvar=True, help="Require 'Authorization: Bearer <key>' on searches."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "warning",
) -> None:
    """A DCI social registry answering POST /registry/sync/search from a caseload file, for tests and demos.
    Configure it as `{"adapter": "dci", "base_url": "http://HOST:PORT"}` in CBI_REGISTRIES.

    Rows without given names, family names or a readable birth date are left out (counted on stderr, never
    shown). Exit status 2 when the file cannot be read.
    """
    from adapters.registries.dci_simulator import serve
    from cbi_service.kit.tabular import UnreadableFile

    if os.environ.get("CBI_ENV") == "production":
        typer.echo("registry-sim: the simulator is for development and tests: unset CBI_ENV=production", err=True)
        raise typer.Exit(2)
    try:
        people, skipped = _caseload(records)
    except UnreadableFile as exc:
        typer.echo(f"registry-sim: {records.name} cannot be read: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"registry-sim: {len(people)} records loaded, {skipped} rows left out", err=True)
    try:
        serve(people, host=host, port=port, api_key=api_key, log_level=log_level)
    except OSError as exc:
        typer.echo(f"registry-sim: cannot listen on {host}:{port}: {exc}", err=True)
        raise typer.Exit(1) from None


def _caseload(source: Path) -> tuple[list[SimRecord], int]:
    """The simulator's records from a caseload file read as imports read it; (records, rows left out)."""
    from adapters.registries.dci_simulator import SimDocument, SimRecord
    from cbi_service.dedup.registries import HASH_COLUMNS
    from cbi_service.kit.tabular import TableLimits, iter_rows, parse_date

    limits = TableLimits.of(Settings(), max_rows=sys.maxsize)
    file_format = "xlsx" if source.suffix.lower() == ".xlsx" else "csv"
    people: list[SimRecord] = []
    skipped = 0
    for number, row in iter_rows(source, file_format, HASH_COLUMNS, limits):
        given, family = row.get("given_names", ""), row.get("family_names", "")
        try:
            born = parse_date(row.get("date_of_birth", ""))
        except ValueError:
            born = None
        if not given or not family or born is None:
            skipped += 1
            continue
        documents: tuple[SimDocument, ...] = ()
        if row.get("document_number"):
            kind = row.get("document_type") or "other"
            documents = (SimDocument(kind, row["document_number"], (row.get("document_country") or "").upper()),)
        ref = row.get("external_ref") or f"row-{number}"
        people.append(SimRecord(ref, given, family, born, row.get("sex") or "unknown", documents))
    return people, skipped


dedup_app = typer.Typer(help="Train the match model and sweep the registry for duplicates.", no_args_is_help=True)


class EngineChoice(StrEnum):
    duckdb = "duckdb"
    spark = "spark"


@dedup_app.command("train")
def train_command(
    ctx: typer.Context,
    api_key: ApiKeyOption,
    version: Annotated[str | None, typer.Option(help="The new model's version (default: the time now).")] = None,
) -> None:
    """Learn the match model from every matchable record (Splink, without labels), store it as a new version
    and make it the active one: registrations and sweeps score with it from then on.

    Prints the records trained on, the time it took, and the weight learned for every comparison level.
    Exits 1 when the registry is too small to learn from.
    """
    from cbi_service.dedup.comparisons import COMPARISONS
    from cbi_service.dedup.training import MIN_RECORDS

    async def run(settings: Settings) -> None:
        from cbi_service.auth.roles import Role
        from cbi_service.auth.service import authorize
        from cbi_service.dedup import service
        from cbi_service.dedup.normalize import MatchRecord
        from cbi_service.dedup.training import NotEnoughRecords, TrainingFailed, train
        from cbi_service.jobs.worker import load_handlers
        from cbi_service.kit.db import standalone_sessions

        load_handlers()  # the registry's side of dedup
        async with standalone_sessions(settings) as sessions:
            async with sessions() as session:
                principal = await authorize(session, api_key, [Role.admin])
                records = [
                    (str(ident), MatchRecord.from_profile(profile))
                    async for page in service.matchable_profiles(session)
                    for ident, profile in page
                ]
            if len(records) < MIN_RECORDS:
                typer.echo(
                    f"cbi-service: a model needs at least {MIN_RECORDS} matchable records to learn from; the"
                    f" registry has {len(records)}. The model shipped with the service stays in use.",
                    err=True,
                )
                raise typer.Exit(1)
            name = version or datetime.now(UTC).strftime("registry-%Y%m%dT%H%M%SZ")
            started = time.perf_counter()
            try:
                model = await asyncio.to_thread(train, records, version=name)
            except NotEnoughRecords as exc:
                typer.echo(f"cbi-service: {exc}", err=True)
                raise typer.Exit(1) from None
            except (ValueError, TrainingFailed) as exc:  # Splink could not estimate a model from these records
                typer.echo(f"cbi-service: training did not converge ({exc}); the active model is unchanged", err=True)
                raise typer.Exit(1) from None
            seconds = time.perf_counter() - started
            async with sessions.begin() as session:
                await service.store_model(session, principal, model)
        typer.echo(f"trained model {model.version} on {len(records)} records in {seconds:.1f} s; now active")
        typer.echo(f"prior (two records of the registry being one person): {model.prior:.3g}")
        for comparison, weights in zip(COMPARISONS, model.weights, strict=True):
            levels = ", ".join(
                f"{label} {weight:+.2f}" for label, weight in zip(comparison.levels[1:], weights[1:], strict=True)
            )
            typer.echo(f"  {comparison.name:14} {levels}")

    from cbi_service.kit.logging import configure_logging

    with service_errors(), database(ctx) as settings:
        configure_logging(settings.effective_log_format, "WARNING")
        asyncio.run(run(settings))


@dedup_app.command("sweep")
def sweep_command(
    ctx: typer.Context,
    api_key: ApiKeyOption,
    programme: Annotated[
        uuid.UUID | None, typer.Option("--programme", help="Only the people enrolled in this programme.")
    ] = None,
    engine: Annotated[EngineChoice, typer.Option(help="Embedded DuckDB, or Spark.")] = EngineChoice.duckdb,
    spark_master: Annotated[
        str | None, typer.Option(help="Spark's master URL (default CBI_DEDUP_SPARK_MASTER, local[2]).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="DuckDB worker processes (default CBI_DEDUP_SWEEP_WORKERS, or one a core)."),
    ] = None,
    resume: Annotated[uuid.UUID | None, typer.Option(help="Go on with a sweep that stopped (its id).")] = None,
) -> None:
    """Compare every matchable record with every other, as POST /v1/dedup/sweeps does, here and now, with
    progress; adjudications are opened for the pairs not already decided, and no status changes.

    A sweep stopped part-way (Ctrl-C, a crash) keeps the chunks it finished: --resume ID goes on with it.
    """

    async def run(settings: Settings) -> DedupSweep:
        from cbi_service.auth.roles import Role
        from cbi_service.auth.service import authorize
        from cbi_service.dedup import service
        from cbi_service.dedup.repository import SweepRepository
        from cbi_service.dedup.service import SweepRun
        from cbi_service.dedup.settings import get_dedup_settings
        from cbi_service.jobs.worker import load_handlers
        from cbi_service.kit.db import standalone_sessions

        load_handlers()
        dedup_settings = get_dedup_settings()
        async with standalone_sessions(settings) as sessions:
            async with sessions.begin() as session:
                principal = await authorize(session, api_key, [Role.admin, Role.registrar])
                if resume is None:
                    sweep = await service.start_sweep(
                        session, principal, programme, engine=engine.value, enqueue_job=False
                    )
                else:
                    sweep = await SweepRepository(session).require(resume)
            typer.echo(f"sweep {sweep.id} ({sweep.engine})", err=True)
            shown = SweepRun(
                workers=workers or dedup_settings.sweep_workers or os.cpu_count() or 1,
                spark_master=spark_master or dedup_settings.spark_master,
                on_progress=_show_progress,
            )
            await service.run_sweep(sessions, sweep.id, shown)
            async with sessions() as session:
                return await SweepRepository(session).require(sweep.id)

    from cbi_service.kit.logging import configure_logging

    with service_errors(), database(ctx) as settings:
        configure_logging(settings.effective_log_format, "WARNING")
        sweep = asyncio.run(run(settings))
    typer.echo(
        f"sweep {sweep.id}: {sweep.status}; {sweep.records} records, {sweep.pairs_compared} pairs compared,"
        f" {sweep.pairs_matched} at or above {sweep.review_threshold}, {sweep.clusters} clusters,"
        f" {sweep.adjudications_opened} adjudications opened ({sweep.pairs_sent_to_adjudication} pairs sent)"
    )


def _show_progress(sweep: DedupSweep) -> None:
    typer.echo(
        f"  chunks {len(sweep.chunks_done)}/{sweep.chunks_total}: {sweep.pairs_compared} pairs compared,"
        f" {sweep.pairs_matched} matched, {sweep.adjudications_opened} adjudications opened",
        err=True,
    )
