"""The simulator's command line, one definition for `cbi-service provider-sim` and `python -m adapters.simulator`.

Defaults come from the option models, so the flags cannot drift from what the simulator accepts.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer
from pydantic import ValidationError

from adapters.simulator.options import Faults, SimulatorOptions

_FAULTS = Faults()
_DELIVERY_CONCURRENCY: int = SimulatorOptions.model_fields["delivery_concurrency"].default


def provider_sim(
    webhook_url: Annotated[str, typer.Option(help="Where the signed webhooks are sent.")],
    webhook_secret: Annotated[
        str,
        typer.Option(
            envvar="CBI_SIM_WEBHOOK_SECRET",
            show_envvar=True,
            help="The Standard Webhooks signing secret, whsec_<base64> (from the environment, it stays out of ps).",
        ),
    ],
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
    delivery_concurrency: Annotated[int, typer.Option(help="Webhook deliveries in parallel.")] = _DELIVERY_CONCURRENCY,
    seed: Annotated[int | None, typer.Option(help="Seed the fault dice for a reproducible run.")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "warning",
) -> None:
    """A payment provider that issues cards and vouchers over HTTP and calls back with signed webhooks.

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
            ),
        )
    except ValidationError as exc:
        for error in exc.errors():
            flag = "--" + str(error["loc"][-1]).replace("_", "-")
            typer.echo(f"provider-sim: {flag}: {error['msg'].removeprefix('Value error, ')}", err=True)
        raise typer.Exit(2) from None
    try:
        serve(options, host=host, port=port, log_level=log_level)
    except OSError as exc:
        typer.echo(f"provider-sim: cannot listen on {host}:{port}: {exc}", err=True)
        raise typer.Exit(1) from None
