"""The simulator in its own OS process, the way tests, the demo and benchmarks need a provider to be."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import httpx

from adapters.simulator.server import READY_PREFIX

_PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: Options passed through the environment, never argv, where any local user could read them (`ps`).
_SECRET_OPTIONS = {
    "api_key": "CBI_SIM_API_KEY",
    "g2p_signing_key": "CBI_SIM_G2P_SIGNING_KEY",
    "g2p_client_public_key": "CBI_SIM_G2P_CLIENT_PUBLIC_KEY",
}

OptionValue = str | int | float | bool | None


class SimulatorProcess:
    """A running `python -m adapters.simulator`; `stop()` ends it gracefully, `kill()` like a crash."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("the provider simulator has not announced its URL yet: call wait_ready()")
        return self._base_url

    @classmethod
    def start(
        cls,
        webhook_url: str,
        webhook_secret: str | None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout: float = 30.0,
        die_with_parent: bool = False,
        **options: OptionValue,
    ) -> SimulatorProcess:
        """Start on `port` (0: a free one) and return once it answers; `options` are the CLI flags.

        E.g. `SimulatorProcess.start(url, secret, duplicate_rate=0.1, reorder=True)`, or for G2P Connect
        `SimulatorProcess.start(base, None, protocol="g2p-connect", g2p_signing_key=..., g2p_client_public_key=...)`.
        """
        simulator = cls.spawn(
            webhook_url, webhook_secret, host=host, port=port, die_with_parent=die_with_parent, **options
        )
        return simulator.wait_ready(startup_timeout)

    @classmethod
    def spawn(
        cls,
        webhook_url: str,
        webhook_secret: str | None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        die_with_parent: bool = False,
        **options: OptionValue,
    ) -> SimulatorProcess:
        """Launch without waiting, so several simulators can start at once; `wait_ready()` before use.

        With `die_with_parent` the simulator ends when the thread that spawned it does, even by kill -9 of
        its process (Linux; elsewhere only the parent's own clean-up stops it): spawn from the main thread.
        """
        args = [sys.executable, "-m", "adapters.simulator", "--host", host, "--port", str(port)]
        args += ["--webhook-url", webhook_url]
        secrets = {} if webhook_secret is None else {"CBI_SIM_WEBHOOK_SECRET": webhook_secret}
        for option, variable in _SECRET_OPTIONS.items():
            if (value := options.pop(option, None)) is not None:
                secrets[variable] = str(value)
        for name, value in options.items():
            flag = "--" + name.replace("_", "-")
            if value is True:
                args.append(flag)
            elif value is not None and value is not False:
                args += [flag, str(value)]
        python_path = [str(_PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(python_path), **secrets}
        on_fork = _dying_with_this_thread() if die_with_parent and sys.platform == "linux" else None
        process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env, preexec_fn=on_fork)  # noqa: S603, PLW1509
        return cls(process)

    def wait_ready(self, timeout: float = 30.0) -> SimulatorProcess:
        """Until it announces its URL and answers `/healthz`; killed, and the error raised, if it does not."""
        deadline = time.monotonic() + timeout
        try:
            base_url = _read_ready_line(self.process, deadline)
            _wait_healthy(base_url, deadline)
        except BaseException:
            self.kill()
            raise
        self._base_url = base_url
        return self

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
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


_PR_SET_PDEATHSIG = 1


def _dying_with_this_thread() -> Callable[[], None]:
    """What the child runs before exec: Linux is to send it SIGTERM when the spawning thread ends, however it
    ends. Everything is looked up here, in the parent: the forked child only calls, never imports (an import
    could wait forever on a lock another thread of the parent held at the fork)."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def on_fork() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the signal was asked for
            os._exit(1)

    return on_fork


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
