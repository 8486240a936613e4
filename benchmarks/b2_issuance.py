"""B2: a 100,000-beneficiary batch from release until every entitlement is `issued`, on each provider protocol.

Processes, as in production: the API (`cbi-service serve`, receiving the simulators' signed callbacks), one
`cbi-service worker` (issuance lanes and sweeps) and a provider simulator per protocol, each its own OS
process, on a fresh database of the PostgreSQL server in DATABASE_URL. The same people are paid twice in the
same run, one batch after the other: through the native adapter (`prepaid_card`, Standard Webhooks) and
through the G2P Connect adapter (`g2p_connect`: signed `disburse` requests, signed `on-disburse` callbacks
carrying 100 outcomes each). Set-up (people, enrolments, the batches' creation, submission and approvals) is
timed apart; each figure is release → all issued. The provider status poll is set to an hour so that the
figures measure the callback path alone.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python benchmarks/b2_issuance.py \
        [--size N] [--adapters native,g2p_connect]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402

from adapters.providers.g2p_connect.signature import public_text, seed_text  # noqa: E402
from adapters.simulator import SimulatorProcess  # noqa: E402
from benchmarks.common import (  # noqa: E402
    ENROL,
    PeakMemory,
    free_port,
    libpq,
    machine,
    ok,
    process_cpu_seconds,
    scratch_database,
    seed_people,
    staff_headers,
    start_service,
    start_worker,
    stop_processes,
    wait_http,
)
from cbi_service.kit.settings import to_asyncpg_url  # noqa: E402

PROVIDERS = {"native": "bench-cards", "g2p_connect": "bench-g2p"}
CHUNK = 1000


async def run(size: int, server_url: str, adapters: list[str]) -> None:
    async with scratch_database(libpq(server_url, "postgres"), f"cbi_b2_{uuid.uuid4().hex[:8]}") as db_url:
        await measure(size, db_url, adapters)


def start_simulators(api_port: int, adapters: list[str]) -> tuple[dict[str, SimulatorProcess], dict[str, dict]]:
    """A simulator per protocol, and the CBI_PROVIDERS entries that reach them."""
    service = f"http://127.0.0.1:{api_port}"
    simulators: dict[str, SimulatorProcess] = {}
    providers: dict[str, dict] = {}
    for kind in adapters:  # in the order given: the batches run in this order
        name = PROVIDERS[kind]
        if kind == "native":
            secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
            simulators[name] = SimulatorProcess.start(f"{service}/v1/webhooks/{name}", secret)
            providers[name] = {
                "adapter": "prepaid_card",
                "base_url": simulators[name].base_url,
                "webhook_secret": secret,
                "chunk_size": CHUNK,
            }
        else:
            ours, theirs = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
            simulators[name] = SimulatorProcess.start(
                f"{service}/v1/g2p-connect/{name}",
                None,
                protocol="g2p-connect",
                g2p_id=name,
                g2p_signing_key=seed_text(theirs),
                g2p_client_public_key=public_text(ours),
            )
            providers[name] = {
                "adapter": "g2p_connect",
                "base_url": simulators[name].base_url,
                "signing_key": seed_text(ours),
                "provider_public_key": public_text(theirs),
                "receiver_id": name,
                "chunk_size": CHUNK,
            }
    return simulators, providers


async def measure(size: int, db_url: str, adapters: list[str]) -> None:
    api_port = free_port()
    simulators, providers = start_simulators(api_port, adapters)
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "CBI_PROVIDERS": json.dumps(providers),
        "CBI_LOG_LEVEL": "WARNING",
        "CBI_LOG_FORMAT": "json",
        "CBI_PROVIDER_STATUS_POLL_SECONDS": "3600",
    }
    processes: list[subprocess.Popen[bytes]] = []
    try:
        service = start_service(api_port, env)
        processes.append(service)
        await wait_http(f"http://127.0.0.1:{api_port}/healthz")
        keys = await staff_headers(db_url)
        # Started before the set-up, so that it is warm when the first batch is released: the batches run
        # one after the other and neither should pay for the worker's start.
        worker = start_worker(env)
        processes.append(worker)
        base = f"http://127.0.0.1:{api_port}"
        async with httpx.AsyncClient(base_url=base, timeout=600) as http:
            conn = await asyncpg.connect(db_url)
            started = time.perf_counter()
            await seed_people(db_url, conn, uuid.UUID(int=1), size)
            seeded = time.perf_counter() - started
            batches = {}
            for name in providers:
                pid = await funded_programme(http, keys, name)
                await conn.execute(ENROL, uuid.UUID(pid), uuid.UUID(int=1))
                batches[name] = await approved_batch(http, keys, pid)
            print("B2 issuance — release → every entitlement issued")
            print(f"  machine: {machine()}")
            print(
                f"  batch: {size} entitlements per provider, chunk {CHUNK}, one API + one worker process + simulators"
            )
            print(f"  set-up (not timed in B2): seed {seeded:.1f} s")
            results = {}
            for name, (bid, created, submitted) in batches.items():
                tracked = {"service": service.pid, "worker": worker.pid, "simulator": simulators[name].process.pid}
                results[name] = await issue_batch(http, conn, keys, bid, tracked, simulators[name])
                results[name].update(created=created, submitted=submitted)
                report(name, providers[name]["adapter"], size, results[name])
            await conn.close()
        if len(results) == 2:
            native, g2p = (results[PROVIDERS[kind]]["elapsed"] for kind in ("native", "g2p_connect"))
            print(f"  side by side: native {native:.1f} s, G2P Connect {g2p:.1f} s (ratio {g2p / native:.2f})")
    finally:
        stop_processes(processes, 15)
        for simulator in simulators.values():
            simulator.stop()


async def funded_programme(http: httpx.AsyncClient, keys: dict[str, dict[str, str]], provider: str) -> str:
    programme = await ok(
        await http.post(
            "/v1/programmes",
            headers=keys["admin"],
            json={
                "name": f"B2 {provider}",
                "country": "CO",
                "currency": "COP",
                "sector": "multipurpose_cash",
                "delivery_mechanism": "prepaid_card",
                "provider": provider,
            },
        )
    )
    pid: str = programme["id"]
    await ok(
        await http.post(
            f"/v1/programmes/{pid}/funds",
            headers={**keys["finance"], "Idempotency-Key": f"fund-{pid}"},
            json={"amount": {"amount": "100000000000.00", "currency": "COP"}, "source": "bench", "reference": "B2"},
        )
    )
    return pid


async def approved_batch(
    http: httpx.AsyncClient, keys: dict[str, dict[str, str]], pid: str
) -> tuple[str, float, float]:
    """Created, submitted and approved: (batch id, seconds to create, seconds to submit)."""
    started = time.perf_counter()
    batch = await ok(
        await http.post(
            "/v1/payment-batches",
            headers=keys["officer"],
            json={
                "programme_id": pid,
                "name": "B2",
                "cycle": "2026-11",
                "amount": {"amount": "250000.00", "currency": "COP"},
            },
        )
    )
    created = time.perf_counter() - started
    bid: str = batch["id"]
    started = time.perf_counter()
    await ok(await http.post(f"/v1/payment-batches/{bid}/submit", headers=keys["officer"]))
    submitted = time.perf_counter() - started
    for approver in ("approver-a", "approver-b"):
        await ok(
            await http.post(
                f"/v1/payment-batches/{bid}/approvals", headers=keys[approver], json={"decision": "approve"}
            )
        )
    return bid, created, submitted


async def issue_batch(
    http: httpx.AsyncClient,
    conn: asyncpg.Connection,
    keys: dict[str, dict[str, str]],
    bid: str,
    tracked: dict[str, int],
    simulator: SimulatorProcess,
) -> dict:
    memory = {name: PeakMemory(tracked[name], 0.1, tree=True) for name in ("service", "worker")}
    for sampler in memory.values():
        sampler.start()
    cpu_before = {name: process_cpu_seconds(pid) for name, pid in tracked.items()}
    await asyncio.sleep(1.0)
    t0 = time.perf_counter()
    await ok(await http.post(f"/v1/payment-batches/{bid}/release", headers={**keys["finance"], "Idempotency-Key": bid}))
    # Polled with index probes only: counting 100,000 rows four times a second would take a noticeable share
    # of the database's CPU from the run it measures.
    all_submitted = None
    while True:
        if all_submitted is None and not await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM entitlements WHERE batch_id = $1 AND status = 'pending')", uuid.UUID(bid)
        ):
            all_submitted = time.perf_counter() - t0
        status = await conn.fetchval("SELECT status FROM payment_batches WHERE id = $1", uuid.UUID(bid))
        if status != "processing":
            break
        if time.perf_counter() - t0 > 1800:
            raise TimeoutError("the batch is still processing after 30 minutes")
        await asyncio.sleep(0.1)
    elapsed = time.perf_counter() - t0
    for sampler in memory.values():
        sampler.running = False
    cpu = {name: process_cpu_seconds(pid) - cpu_before[name] for name, pid in tracked.items()}
    issued = await conn.fetchval(
        "SELECT count(*) FROM entitlements WHERE batch_id = $1 AND status = 'issued'", uuid.UUID(bid)
    )
    counters = (await http.get(f"{simulator.base_url}/admin/counters", params={"per_key": False})).json()
    return {
        "status": status,
        "elapsed": elapsed,
        "all_submitted": all_submitted,
        "issued": issued,
        "peak": {name: sampler.peak for name, sampler in memory.items()},
        "cpu": cpu,
        "counters": counters,
    }


def report(name: str, adapter: str, size: int, result: dict) -> None:
    counters = result["counters"]
    print(f"  [{name}: adapter {adapter}]")
    print(f"    set-up (not timed): create batch {result['created']:.1f} s, submit {result['submitted']:.1f} s")
    print(f"    release → all submitted to the provider: {result['all_submitted']:.1f} s")
    print(
        f"    release → batch {result['status']}: {result['elapsed']:.1f} s  ({size / result['elapsed']:,.0f}"
        f" entitlements/s); {result['issued']:,} of {size:,} entitlements issued"
    )
    peak = result["peak"]
    print(f"    peak RSS: service {peak['service'] / 2**20:.0f} MiB, worker {peak['worker'] / 2**20:.0f} MiB")
    print("    CPU seconds during the run: " + ", ".join(f"{k} {v:.0f}" for k, v in result["cpu"].items()))
    if adapter == "g2p_connect":
        print(
            f"    provider: {counters['disbursed']} disbursed, {counters['paid_more_than_once']} paid more than once, "
            f"{counters['disburse_requests']} disburse requests, {counters['webhooks_sent']} on-disburse callbacks"
        )
    else:
        print(
            f"    provider: {counters['card_loads']} card loads, {counters['keys_received_more_than_once']} keys "
            f"received more than once, {counters['webhooks_sent']} webhooks delivered"
        )
    met = result["elapsed"] <= 60 and result["issued"] == size
    print(f"    target ≤ 60 s with every entitlement issued: {'met' if met else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument(
        "--adapters", default="native,g2p_connect", help="comma-separated, run in this order: " + ", ".join(PROVIDERS)
    )
    args = parser.parse_args()
    adapters = [a.strip() for a in args.adapters.split(",") if a.strip()]
    unknown = set(adapters) - set(PROVIDERS)
    if unknown or not adapters:
        raise SystemExit(f"--adapters: choose among {', '.join(PROVIDERS)}")
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("set DATABASE_URL to a PostgreSQL server (postgresql://user@host:port/db)")
    to_asyncpg_url(url)
    asyncio.run(run(args.size, url, adapters))


if __name__ == "__main__":
    main()
