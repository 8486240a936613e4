"""`cbi-service ledger verify FILE`: an auditor's offline check of an export, with no database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ledger_app = typer.Typer(help="Work with ledger exports offline.", no_args_is_help=True)


@ledger_app.command("verify")
def verify(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="A CSV, Parquet or XLSX export.")
    ],
    allow_gaps: Annotated[
        bool,
        typer.Option("--allow-gaps", help="Accept missing chain positions (an export filtered by programme)."),
    ] = False,
) -> None:
    """Recompute the hash chain and check every transaction sums to zero per currency.

    Exits 0 when the file is whole, 1 naming the first bad line (CSV; row for Parquet, sheet and row for
    XLSX) and why, 2 when the file is not a readable export.
    """
    from cbi_service.exports.verify import UnreadableExport, verify_file

    try:
        outcome = verify_file(file, allow_gaps=allow_gaps)
    except UnreadableExport as exc:
        typer.echo(f"{file}: {exc}", err=True)
        raise typer.Exit(2) from None
    if not outcome.ok:
        where = outcome.location
        if outcome.transaction_id:
            where = f"{where} (transaction {outcome.transaction_id})"
        typer.echo(f"{file}: {where}: {outcome.reason}", err=True)
        raise typer.Exit(1)
    scope = (
        "every chain stripe from its first transaction"
        if outcome.from_genesis
        else "partial: each stripe checked from its first transaction in the file"
    )
    typer.echo(
        f"{file}: OK, {outcome.rows} entries in {outcome.transactions} balanced transactions, "
        f"{outcome.stripes} chain stripes ({scope})"
    )
