"""A provider simulator: a separate HTTP server that issues cards and vouchers and calls back with
Standard Webhooks-signed events, with injectable faults (latency, 5xx, timeouts, outages, declines,
duplicate and reordered webhooks) and counters that prove exactly-once issuance.

From code: `serve(SimulatorOptions(webhook_url=..., webhook_secret=..., faults=Faults(...)), host=..., port=...)`
blocks serving; `SimulatorProcess.start(webhook_url, webhook_secret, **faults)` runs it as a child process.
"""

from adapters.simulator.admin import SimulatorAdmin
from adapters.simulator.app import create_app
from adapters.simulator.options import Faults, SimulatorOptions
from adapters.simulator.process import SimulatorProcess
from adapters.simulator.server import serve

__all__ = [
    "Faults",
    "SimulatorAdmin",
    "SimulatorOptions",
    "SimulatorProcess",
    "create_app",
    "serve",
]
