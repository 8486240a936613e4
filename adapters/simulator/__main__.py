"""`python -m adapters.simulator --port P --webhook-url URL --webhook-secret S [faults...]`: the command
`cbi-service provider-sim` runs, for callers (SimulatorProcess, benchmarks) that need no service installed."""

from __future__ import annotations

import typer

from adapters.simulator.cli import provider_sim

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command()(provider_sim)

if __name__ == "__main__":
    app(prog_name="provider-sim")
