"""`cbi-service registry hash`: what a partner agency runs on its own machine to share its caseload safely."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

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
