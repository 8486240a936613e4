"""Running the simulator: `serve` binds and serves (what `provider-sim` and `python -m adapters.simulator` run)."""

from __future__ import annotations

import socket
import sys

import uvicorn

from adapters.simulator.app import create_app
from adapters.simulator.options import SimulatorOptions

READY_PREFIX = "provider simulator listening on "


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
