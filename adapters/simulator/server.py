"""Running the simulator: `make_options` checks the flat flags, `serve` binds and serves (the CLI and
`python -m adapters.simulator` use both)."""

from __future__ import annotations

import socket
import sys

import uvicorn

from adapters.simulator.app import create_app
from adapters.simulator.options import Faults, SimulatorOptions

READY_PREFIX = "provider simulator listening on "


def make_options(
    *,
    webhook_url: str,
    webhook_secret: str,
    failure_rate: float = 0.0,
    latency_ms: int = 0,
    timeout_rate: float = 0.0,
    hang_seconds: float = 30.0,
    duplicate_rate: float = 0.0,
    reorder: bool = False,
    reorder_window_ms: int = 500,
    decline_rate: float = 0.0,
    api_key: str | None = None,
    delivery_concurrency: int = 64,
    seed: int | None = None,
) -> SimulatorOptions:
    """The flat CLI flags as validated options; raises `ValueError` (pydantic) on a bad value."""
    return SimulatorOptions(
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


def serve(options: SimulatorOptions, *, host: str, port: int, log_level: str = "warning") -> None:
    """Bind first, then announce the URL on stdout: with `port=0` this is how a parent learns the port.

    Connections made between the announcement and the end of start-up wait in the listen backlog.
    """
    sock = socket.create_server((host, port), backlog=4096)
    bound_port = sock.getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    sys.stdout.write(f"{READY_PREFIX}http://{url_host}:{bound_port}\n")
    sys.stdout.flush()
    config = uvicorn.Config(
        create_app(options),
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=2,
        backlog=4096,
    )
    uvicorn.Server(config).run(sockets=[sock])
