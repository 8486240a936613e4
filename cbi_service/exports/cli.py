"""`cbi-service ledger verify FILE`: an auditor's offline check of an export, with no database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

ledger_app = typer.Typer(help="Work with ledger exports offline.", no_args_is_help=True)

_READABLE = {"exists": True, "dir_okay": False, "readable": True}


@ledger_app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(**_READABLE, help="A CSV, Parquet or XLSX export.")],
    allow_gaps: Annotated[
        bool,
        typer.Option("--allow-gaps", help="Accept missing chain positions (an export filtered by programme)."),
    ] = False,
    manifest: Annotated[
        Path | None,
        typer.Option(
            "--manifest",
            **_READABLE,
            help="The signed manifest of the export's window (GET .../export/manifest).",
        ),
    ] = None,
    keys: Annotated[
        Path | None,
        typer.Option(
            "--keys",
            **_READABLE,
            help="The keys the manifest is checked against: the JWKS of GET /v1/ledger/export/manifest/keys, "
            "saved, or a PEM public key.",
        ),
    ] = None,
) -> None:
    """Recompute the hash chain and check every transaction sums to zero per currency; with --manifest,
    also that the file holds exactly what the signed manifest says (nothing cut from either end or the middle).

    Exits 0 when the file is whole, 1 naming the first bad line (CSV; row for Parquet, sheet and row for
    XLSX) and why, or each way the file differs from the manifest, or a manifest whose signature fails;
    2 when the file, the manifest or the keys cannot be read.
    """
    from cbi_service.exports.manifest import ManifestError, ManifestSignatureInvalid, read_public_keys, read_signed
    from cbi_service.exports.verify import UnreadableExport, verify_file

    statement: dict[str, Any] | None = None
    if manifest is not None:
        if keys is None:
            typer.echo("--manifest needs --keys: the public keys its signature is checked against", err=True)
            raise typer.Exit(2)
        try:
            statement = read_signed(manifest, read_public_keys(keys))
        except ManifestError as exc:
            typer.echo(f"{manifest}: {exc}", err=True)
            raise typer.Exit(2) from None
        except ManifestSignatureInvalid as exc:
            typer.echo(f"{manifest}: signature invalid: {exc}", err=True)
            raise typer.Exit(1) from None
    try:
        outcome = verify_file(file, allow_gaps=allow_gaps, manifest=statement)
    except UnreadableExport as exc:
        typer.echo(f"{file}: {exc}", err=True)
        raise typer.Exit(2) from None
    if outcome.reason is not None:
        where = outcome.location
        if outcome.transaction_id:
            where = f"{where} (transaction {outcome.transaction_id})"
        typer.echo(f"{file}: {where}: {outcome.reason}", err=True)
        raise typer.Exit(1)
    if outcome.differences:
        for difference in outcome.differences:
            typer.echo(f"{file}: not as the manifest says: {difference}", err=True)
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
    if statement is not None:
        window = statement["window"]
        typer.echo(
            f"{file}: as the manifest signed by {statement['key_id']} at {statement['generated_at']} says, "
            f"for from {window['from'] or 'the start'} to {window['to'] or 'its snapshot'}"
            + (f", programme {window['programme_id']}" if window["programme_id"] else "")
            + ": nothing missing, nothing added"
        )
