"""Running `cbi-service` as an operator does: its own process, stdout and stderr piped (never a terminal)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from typer.testing import CliRunner, Result

#: Variables that would ask for colour whatever the output is; the tests see what a plain pipe gets.
COLOUR_FORCING = ("FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
ANSI = "\x1b["


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CBI_API_KEY", *COLOUR_FORCING}}
    return env | {"CBI_LOG_FORMAT": "console", **extra}


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cbi_service", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def raw_key(headers: dict[str, str]) -> str:
    """The key itself from the Authorization headers `api_key_factory` returns."""
    return headers["Authorization"].removeprefix("Bearer ")


async def invoke(*args: str, **env: str | None) -> Result:
    """The command run in this process, as `cli` runs it but without starting Python again: in a thread, as
    commands run an event loop of their own. `env` sets (or, with None, removes) variables meanwhile."""
    from cbi_service.cli import app

    unset: dict[str, str | None] = {"CBI_API_KEY": None}
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=unset | env, catch_exceptions=False)
