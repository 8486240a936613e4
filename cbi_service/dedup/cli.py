"""`cbi-service registry hash`: what a partner agency runs on its own machine to share its caseload safely."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

registry_app = typer.Typer(help="Work with external registries shared between agencies.", no_args_is_help=True)


@registry_app.command("hash")
def hash_command(
    source: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The caseload CSV (import columns).")
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
    """Turn a CSV of people into a list of keyed hashes holding no personal data.

    Rows without given names, family names and a birth date, or with an invalid document, are skipped and
    counted. Configure the output on the receiving side as a `hashed_list` entry of CBI_REGISTRIES.
    """
    from adapters.registries.base import RegistryConfigError
    from cbi_service.dedup.registries import hash_registry_csv

    try:
        summary = hash_registry_csv(source, destination, key)
    except RegistryConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"hashed {summary.people} people into {summary.keys} keys ({summary.skipped} rows skipped): {destination}"
    )
