"""The first run: in development with CBI_PROVIDERS unset, `serve` plays its providers with the simulator.

A simulator is one provider (its books, its webhook URL and secret), so each simulated provider is a
simulator process of its own, on a free local port, with a fresh random webhook secret, sending its
webhooks to serve's own webhook route; `sim-g2p` speaks G2P Connect Disburse, with a fresh Ed25519 key
pair on each side, and calls back at serve's G2P Connect routes. They start before the database and stop
with `serve`, however it stops: its clean-up on exit, SIGTERM and errors, and on Linux the kernel when it is
killed outright.

A worker joining the same database must send to the same simulators, so `serve` writes the providers it
configured, secrets included, to `CBI_DATA_DIR/simulated-providers.json` (mode 0600, removed when serve
stops), and `cbi-service worker` with CBI_PROVIDERS unset in development reads them from there.
Setting CBI_PROVIDERS, even to `{}` (no providers but the built-in ones), means nothing is simulated;
production never starts a simulator.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.providers.g2p_connect.signature import public_text, seed_text
from adapters.simulator import SimulatorProcess
from cbi_service.kit.settings import Settings, hidden_secrets

#: The providers the simulator plays on a first run, by name → adapter.
SIMULATED_PROVIDERS: Mapping[str, str] = MappingProxyType(
    {"sim-card": "prepaid_card", "sim-voucher": "voucher", "sim-g2p": "g2p_connect"}
)
PROVIDERS_FILE = "simulated-providers.json"
SIMULATOR_STARTUP_SECONDS = 30.0


class SimulatorsGone(RuntimeError):
    """The simulated providers a worker would join belong to a `serve` that no longer runs."""


def simulates_providers(settings: Settings) -> bool:
    return settings.env == "development" and "providers" not in settings.model_fields_set


@contextlib.contextmanager
def simulated_providers(settings: Settings, *, host: str, port: int) -> Iterator[Settings]:
    """`settings` with the simulated providers while the block runs (as they are when there is nothing to
    simulate); the simulators and their file go when it ends."""
    if not simulates_providers(settings):
        yield settings
        return
    service = f"http://{_reachable(host)}:{port}"
    simulators: dict[str, SimulatorProcess] = {}
    configs: dict[str, dict[str, Any]] = {}
    try:
        for name, adapter in SIMULATED_PROVIDERS.items():  # all launched before any is waited for
            simulators[name], configs[name] = _spawn(name, adapter, service)
        for simulator in simulators.values():
            simulator.wait_ready(SIMULATOR_STARTUP_SECONDS)
        providers = {name: {**configs[name], "base_url": simulators[name].base_url} for name in configs}
        path = _write_providers_file(settings.data_dir, providers)
        try:
            yield settings.model_copy(update={"providers": hidden_secrets(providers)})
        finally:
            _remove_own_providers_file(path)
    finally:
        for simulator in simulators.values():
            simulator.stop()


def joined_providers(settings: Settings) -> Settings:
    """`settings` with the simulated providers of the `serve` running in CBI_DATA_DIR, for a worker with
    CBI_PROVIDERS unset in development; as they are otherwise, or when that serve configured its own."""
    if not simulates_providers(settings):
        return settings
    path = settings.data_dir / PROVIDERS_FILE
    try:
        written = json.loads(path.read_text())
    except FileNotFoundError:
        return settings
    if not _is_running(written["serve_pid"]):
        raise SimulatorsGone(
            f"{path} was left by a `cbi-service serve` that is no longer running: start serve again with the "
            "same CBI_DATA_DIR, or set CBI_PROVIDERS"
        )
    return settings.model_copy(update={"providers": hidden_secrets(written["providers"])})


def _spawn(name: str, adapter: str, service: str) -> tuple[SimulatorProcess, dict[str, Any]]:
    """The simulator playing provider `name`, launched, and the provider's entry without its `base_url`."""
    if adapter == "g2p_connect":
        ours, theirs = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        callbacks = f"{service}/v1/g2p-connect/{name}"
        process = SimulatorProcess.spawn(
            callbacks,
            None,
            die_with_parent=True,
            protocol="g2p-connect",
            g2p_id=name,
            g2p_signing_key=seed_text(theirs),
            g2p_client_public_key=public_text(ours),
        )
        config = {
            "adapter": adapter,
            "signing_key": seed_text(ours),
            "provider_public_key": public_text(theirs),
            "receiver_id": name,
            "callback_url": callbacks,
        }
        return process, config
    secret = _new_secret()
    process = SimulatorProcess.spawn(f"{service}/v1/webhooks/{name}", secret, die_with_parent=True)
    return process, {"adapter": adapter, "webhook_secret": secret}


def _new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _reachable(host: str) -> str:
    """Where a local process reaches a server bound to `host` (a wildcard address means loopback)."""
    if host in {"", "0.0.0.0"}:  # noqa: S104 - reading the bind address, not binding
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _write_providers_file(data_dir: Path, providers: Mapping[str, Any]) -> Path:
    """Readable by the owner alone from the moment it exists (it holds webhook secrets); replaced whole."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / PROVIDERS_FILE
    partial = path.with_name(f".{PROVIDERS_FILE}.{os.getpid()}")
    partial.unlink(missing_ok=True)
    with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        json.dump({"serve_pid": os.getpid(), "providers": providers}, out)
    os.replace(partial, path)
    return path


def _remove_own_providers_file(path: Path) -> None:
    """Another serve may have written its own since: only this one's goes."""
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
        if json.loads(path.read_text())["serve_pid"] == os.getpid():
            path.unlink()


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True
