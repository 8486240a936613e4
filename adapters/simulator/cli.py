"""The simulator's command line, one definition for `cbi-service provider-sim` and `python -m adapters.simulator`.

Defaults come from the option models, so the flags cannot drift from what the simulator accepts.
"""

from __future__ import annotations

import os
from typing import Annotated, cast

import typer
from pydantic import ValidationError

from adapters.simulator.options import Faults, Protocol, SimulatorOptions

_FAULTS = Faults()
_DELIVERY_CONCURRENCY: int = SimulatorOptions.model_fields["delivery_concurrency"].default
_G2P_ID: str = SimulatorOptions.model_fields["g2p_id"].default
_CALLBACK_MAX_ITEMS: int = SimulatorOptions.model_fields["callback_max_items"].default


def provider_sim(
    webhook_url: Annotated[
        str,
        typer.Option(
            help="Where the signed webhooks are sent; with G2P Connect, the base its callbacks are sent under "
            "(…/on-disburse, …/txn/on-status)."
        ),
    ],
    webhook_secret: Annotated[
        str | None,
        typer.Option(
            envvar="CBI_SIM_WEBHOOK_SECRET",
            show_envvar=True,
            help="The Standard Webhooks signing secret, whsec_<base64> (from the environment, it stays out of ps).",
        ),
    ] = None,
    protocol: Annotated[
        str, typer.Option(help="The provider API it speaks: native or g2p-connect (G2P Connect Disburse).")
    ] = "native",
    g2p_signing_key: Annotated[
        str | None,
        typer.Option(
            envvar="CBI_SIM_G2P_SIGNING_KEY",
            show_envvar=True,
            help="G2P Connect: its Ed25519 key signing callbacks (PEM, or base64 of the seed).",
        ),
    ] = None,
    g2p_client_public_key: Annotated[
        str | None,
        typer.Option(
            envvar="CBI_SIM_G2P_CLIENT_PUBLIC_KEY",
            show_envvar=True,
            help="G2P Connect: the Ed25519 public key that verifies the client's requests (PEM, or base64).",
        ),
    ] = None,
    g2p_id: Annotated[str, typer.Option(help="G2P Connect: its id in message headers.")] = _G2P_ID,
    callback_max_items: Annotated[
        int, typer.Option(help="G2P Connect: most disbursement statuses one callback carries.")
    ] = _CALLBACK_MAX_ITEMS,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on; 0 picks a free one (printed on stdout).")] = 8900,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="CBI_SIM_API_KEY",
            show_envvar=True,
            help="Require 'Authorization: Bearer <key>' on the provider API.",
        ),
    ] = None,
    failure_rate: Annotated[float, typer.Option(help="Share of API calls answered 5xx.")] = _FAULTS.failure_rate,
    latency_ms: Annotated[int, typer.Option(help="Added to every API call.")] = _FAULTS.latency_ms,
    timeout_rate: Annotated[float, typer.Option(help="Share of API calls that act, then hang.")] = _FAULTS.timeout_rate,
    hang_seconds: Annotated[float, typer.Option(help="How long a timed-out call hangs.")] = _FAULTS.hang_seconds,
    duplicate_rate: Annotated[float, typer.Option(help="Share of webhooks delivered twice.")] = _FAULTS.duplicate_rate,
    reorder: Annotated[bool, typer.Option("--reorder", help="Deliver webhooks out of order.")] = _FAULTS.reorder,
    reorder_window_ms: Annotated[
        int, typer.Option(help="Longest random hold of a webhook when reordering.")
    ] = _FAULTS.reorder_window_ms,
    decline_rate: Annotated[
        float, typer.Option(help="Share of instructions ending in entitlement.failed.")
    ] = _FAULTS.decline_rate,
    drop_rate: Annotated[float, typer.Option(help="Share of webhooks never sent at all.")] = _FAULTS.drop_rate,
    delivery_concurrency: Annotated[int, typer.Option(help="Webhook deliveries in parallel.")] = _DELIVERY_CONCURRENCY,
    seed: Annotated[int | None, typer.Option(help="Seed the fault dice for a reproducible run.")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "warning",
) -> None:
    """A payment provider that issues cards and vouchers over HTTP and calls back with signed webhooks, or,
    with --protocol g2p-connect, disburses over G2P Connect and calls back with signed on-disburse messages.

    The faults can also be changed while it runs, through PATCH /admin/faults.
    """
    from adapters.simulator.server import serve

    if os.environ.get("CBI_ENV") == "production":
        typer.echo("provider-sim: the simulator pays no one and is for development: unset CBI_ENV=production", err=True)
        raise typer.Exit(2)
    try:
        options = SimulatorOptions(
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            protocol=cast(Protocol, protocol),  # checked by SimulatorOptions
            g2p_signing_key=g2p_signing_key,
            g2p_client_public_key=g2p_client_public_key,
            g2p_id=g2p_id,
            callback_max_items=callback_max_items,
            api_key=api_key,
            delivery_concurrency=delivery_concurrency,
            seed=seed,
            faults=Faults(
                failure_rate=failure_rate,
                latency_ms=latency_ms,
                timeout_rate=timeout_rate,
                hang_seconds=hang_seconds,
                duplicate_rate=duplicate_rate,
                reorder=reorder,
                reorder_window_ms=reorder_window_ms,
                decline_rate=decline_rate,
                drop_rate=drop_rate,
            ),
        )
    except ValidationError as exc:
        for error in exc.errors(include_input=False):
            flag = "--" + str(error["loc"][-1]).replace("_", "-") if error["loc"] else "options"
            typer.echo(f"provider-sim: {flag}: {error['msg'].removeprefix('Value error, ')}", err=True)
        raise typer.Exit(2) from None
    try:
        serve(options, host=host, port=port, log_level=log_level)
    except OSError as exc:
        typer.echo(f"provider-sim: cannot listen on {host}:{port}: {exc}", err=True)
        raise typer.Exit(1) from None
