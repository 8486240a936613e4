"""A provider simulator: a separate HTTP server that issues cards and vouchers and calls back with
Standard Webhooks-signed events, or (`protocol="g2p-connect"`, see `g2p`) disburses over G2P Connect and
calls back with signed `on-disburse` messages, with injectable faults (latency, 5xx, timeouts, outages,
declines, duplicate, reordered and dropped callbacks) and counters that prove exactly-once issuance.

From code: `serve(SimulatorOptions(webhook_url=..., webhook_secret=..., faults=Faults(...)), host=..., port=...)`
blocks serving; `SimulatorProcess.start(webhook_url, webhook_secret, **faults)` runs it as a child process.

The names are loaded when first used: `cbi-service` reads the simulator's command line (`cli`) at every start
and should not pay for its web app then.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapters.simulator.admin import SimulatorAdmin
    from adapters.simulator.app import create_app
    from adapters.simulator.options import Faults, SimulatorOptions
    from adapters.simulator.process import SimulatorProcess
    from adapters.simulator.server import serve

_HOMES = {
    "Faults": "options",
    "SimulatorAdmin": "admin",
    "SimulatorOptions": "options",
    "SimulatorProcess": "process",
    "create_app": "app",
    "serve": "server",
}

__all__ = [
    "Faults",
    "SimulatorAdmin",
    "SimulatorOptions",
    "SimulatorProcess",
    "create_app",
    "serve",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
