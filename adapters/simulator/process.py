"""The simulator in its own OS process, the way tests, the demo and benchmarks need a provider to be."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from adapters.simulator.server import READY_PREFIX

_PROJECT_ROOT = Path(__file__).resolve().parents[2]

OptionValue = str | int | float | bool | None


class SimulatorProcess:
    """A running `python -m adapters.simulator`; `stop()` ends it gracefully, `kill()` like a crash."""

    def __init__(self, process: subprocess.Popen[str], base_url: str) -> None:
        self.process = process
        self.base_url = base_url

    @classmethod
    def start(
        cls,
        webhook_url: str,
        webhook_secret: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 30.0,
        **options: OptionValue,
    ) -> SimulatorProcess:
        """Start on `port` (0: a free one) and return once it answers; `options` are the CLI flags.

        E.g. `SimulatorProcess.start(url, secret, duplicate_rate=0.1, reorder=True)`.
        """
        args = [sys.executable, "-m", "adapters.simulator", "--host", host, "--port", str(port)]
        args += ["--webhook-url", webhook_url, "--webhook-secret", webhook_secret]
        for name, value in options.items():
            flag = "--" + name.replace("_", "-")
            if value is True:
                args.append(flag)
            elif value is not None and value is not False:
                args += [flag, str(value)]
        python_path = [str(_PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(python_path)}
        process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)  # noqa: S603
        deadline = time.monotonic() + startup_timeout
        try:
            base_url = _read_ready_line(process, deadline)
            _wait_healthy(base_url, deadline)
        except BaseException:
            process.kill()
            process.wait()
            raise
        return cls(process, base_url)

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def kill(self) -> None:
        """SIGKILL: the provider vanishes mid-flight, losing queued webhooks as a crashed provider would."""
        self.process.kill()
        self.process.wait()

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _read_ready_line(process: subprocess.Popen[str], deadline: float) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(max(0.0, deadline - time.monotonic())):
            raise TimeoutError("provider simulator did not start in time")
    line = process.stdout.readline()
    if not line.startswith(READY_PREFIX):
        raise RuntimeError(f"provider simulator failed to start (exit code {process.poll()}): {line!r}")
    return line[len(READY_PREFIX) :].strip()


def _wait_healthy(base_url: str, deadline: float) -> None:
    while True:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("provider simulator did not become healthy in time")
        time.sleep(0.05)
