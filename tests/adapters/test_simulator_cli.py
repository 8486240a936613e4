"""`cbi-service provider-sim` and `python -m adapters.simulator`, one command: flags and refusals."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from adapters.providers import IssueInstruction, build_provider
from adapters.simulator import Faults, SimulatorAdmin, SimulatorProcess
from adapters.simulator.server import READY_PREFIX
from tests.adapters.support import WebhookReceiver, new_secret

PROJECT_ROOT = Path(__file__).resolve().parents[2]


async def test_flags_configure_the_faults(receiver: WebhookReceiver, webhook_secret: str) -> None:
    with SimulatorProcess.start(
        receiver.url, webhook_secret, decline_rate=1.0, duplicate_rate=1.0, latency_ms=5, reorder=True, seed=3
    ) as simulator:
        faults = httpx.get(f"{simulator.base_url}/admin/faults").json()
        adapter = build_provider("sim", {"adapter": "voucher", "base_url": simulator.base_url})
        item = IssueInstruction(uuid4(), "ben_1", 1_000, "USD", "prog_1", 30)
        try:
            (outcome,) = await adapter.issue([item])
        finally:
            await adapter.aclose()
        async with SimulatorAdmin(simulator.base_url) as admin:
            counters = await admin.drained()

    assert faults["decline_rate"] == 1.0
    assert faults["duplicate_rate"] == 1.0
    assert faults["latency_ms"] == 5
    assert faults["reorder"] is True
    assert outcome.accepted
    assert (counters["failed"], counters["webhooks_sent"]) == (1, 2)
    assert simulator.process.returncode is not None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--webhook-secret", "whsec_"], "webhook secret"),
        (["--webhook-secret", "whsec_c2VjcmV0", "--failure-rate", "2"], "--failure-rate: Input should be less than"),
        (["--webhook-secret", "whsec_c2VjcmV0", "--webhook-url", "ftp://x"], "--webhook-url: webhook URL"),
        (["--webhook-secret", "whsec_c2VjcmV0", "--latency-ms", "soon"], "Invalid value for '--latency-ms'"),
        ([], "give a webhook secret"),
        (["--protocol", "iso20022"], "--protocol: Input should be 'native' or 'g2p-connect'"),
        (["--protocol", "g2p-connect"], "needs the simulator's signing key and the client's public key"),
        (["--protocol", "g2p-connect", "--g2p-signing-key", "c2VjcmV0"], "--g2p-signing-key: not PEM"),
    ],
)
def test_invalid_flags_stop_before_listening(flags: list[str], message: str) -> None:
    args = [sys.executable, "-m", "adapters.simulator", "--port", "0", "--webhook-url", "http://127.0.0.1:9/"]
    result = subprocess.run([*args, *flags], check=False, capture_output=True, text=True, timeout=30, cwd=PROJECT_ROOT)

    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def _help(*command: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", *command, "--help"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=PROJECT_ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert "\x1b[" not in result.stdout
    return result.stdout


def test_both_commands_offer_every_option_of_the_simulator():
    flags = set(re.findall(r"--[a-z][a-z-]+", _help("cbi_service", "provider-sim")))

    assert flags == set(re.findall(r"--[a-z][a-z-]+", _help("adapters.simulator")))
    assert {"--" + name.replace("_", "-") for name in Faults.model_fields} <= flags
    assert {"--port", "--webhook-url", "--webhook-secret", "--api-key", "--seed", "--delivery-concurrency"} <= flags


def test_cbi_service_provider_sim_serves():
    args = ["--port", "0", "--webhook-url", "http://127.0.0.1:9/hooks", "--webhook-secret", new_secret()]
    process = subprocess.Popen(
        [sys.executable, "-m", "cbi_service", "provider-sim", *args, "--reorder", "--failure-rate", "0.25"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(READY_PREFIX), line
        base_url = line.removeprefix(READY_PREFIX).strip()
        faults = httpx.get(f"{base_url}/admin/faults", timeout=10).json()
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
    assert (faults["reorder"], faults["failure_rate"]) == (True, 0.25)


@pytest.mark.skipif(sys.platform != "linux", reason="the kernel ends it only on Linux")
def test_a_simulator_started_to_die_with_its_parent_ends_when_the_parent_is_killed_outright() -> None:
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from adapters.simulator import SimulatorProcess;"
            " s = SimulatorProcess.start('http://127.0.0.1:9/', 'whsec_c2VjcmV0', die_with_parent=True);"
            " print(s.base_url, flush=True); time.sleep(120)",
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        base_url = parent.stdout.readline().strip()
        assert httpx.get(f"{base_url}/healthz", timeout=5).status_code == 200
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(f"{base_url}/healthz", timeout=1)
        except httpx.TransportError:
            break
        assert time.monotonic() < deadline, "the simulator outlived the process that started it"
        time.sleep(0.2)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_a_spawned_simulator_keeps_its_secrets_out_of_its_command_line() -> None:
    secret, api_key = new_secret(), f"sim-{uuid4().hex}"
    simulator = SimulatorProcess.start("http://127.0.0.1:9/", secret, api_key=api_key)
    try:
        command_line = Path(f"/proc/{simulator.process.pid}/cmdline").read_bytes().decode()
        unknown = f"{simulator.base_url}/instructions/{uuid4()}"
        unauthorised = httpx.get(unknown, timeout=5)
        authorised = httpx.get(unknown, headers={"Authorization": f"Bearer {api_key}"}, timeout=5)
    finally:
        simulator.stop()
    assert secret not in command_line
    assert api_key not in command_line
    assert "--webhook-url" in command_line
    assert unauthorised.status_code == 401
    assert authorised.status_code == 404, "the key still reached it"


def test_production_refuses_the_simulator_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cbi_service", "provider-sim", "--port", "0", "--webhook-url", "http://127.0.0.1:9/"],
        env={**os.environ, "CBI_ENV": "production", "CBI_SIM_WEBHOOK_SECRET": new_secret()},
        capture_output=True,
        text=True,
        timeout=30,
        cwd=PROJECT_ROOT,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "provider-sim: the simulator pays no one and is for development: unset CBI_ENV=production"
    ]
