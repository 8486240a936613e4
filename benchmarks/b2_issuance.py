"""B2: a 100,000-beneficiary batch from release until every entitlement is `issued`.

Processes, as in production: the API (`cbi-service serve`, receiving the simulator's signed webhooks), one
`cbi-service worker` (issuance lanes and sweeps) and the provider simulator, each its own OS process, on a
fresh database of the PostgreSQL server in DATABASE_URL. Set-up (people, enrolments, the batch's creation,
submission and approvals) is timed apart; the figure is release → all issued. The provider status poll is
set to an hour so that the figure measures the webhook path alone.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python benchmarks/b2_issuance.py [--size N]
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

PROVIDER = "bench-cards"


async def run(size: int, server_url: str) -> None:
    async with scratch_database(libpq(server_url, "postgres"), f"cbi_b2_{uuid.uuid4().hex[:8]}") as db_url:
        await measure(size, db_url)


async def measure(size: int, db_url: str) -> None:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    api_port = free_port()
    simulator = SimulatorProcess.start(f"http://127.0.0.1:{api_port}/v1/webhooks/{PROVIDER}", secret)
    providers = {
        PROVIDER: {
            "adapter": "prepaid_card",
            "base_url": simulator.base_url,
            "webhook_secret": secret,
            "chunk_size": 1000,
        }
    }
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
        base = f"http://127.0.0.1:{api_port}"
        async with httpx.AsyncClient(base_url=base, timeout=600) as http:
            programme = await ok(
                await http.post(
                    "/v1/programmes",
                    headers=keys["admin"],
                    json={
                        "name": "B2",
                        "country": "CO",
                        "currency": "COP",
                        "sector": "multipurpose_cash",
                        "delivery_mechanism": "prepaid_card",
                        "provider": PROVIDER,
                    },
                )
            )
            pid = programme["id"]
            await ok(
                await http.post(
                    f"/v1/programmes/{pid}/funds",
                    headers={**keys["finance"], "Idempotency-Key": "fund"},
                    json={
                        "amount": {"amount": "100000000000.00", "currency": "COP"},
                        "source": "bench",
                        "reference": "B2",
                    },
                )
            )
            conn = await asyncpg.connect(db_url)
            started = time.perf_counter()
            await seed_people(db_url, conn, uuid.UUID(int=1), size)
            await conn.execute(ENROL, uuid.UUID(pid), uuid.UUID(int=1))
            seeded = time.perf_counter() - started
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
            bid = batch["id"]
            started = time.perf_counter()
            await ok(await http.post(f"/v1/payment-batches/{bid}/submit", headers=keys["officer"]))
            submitted = time.perf_counter() - started
            for approver in ("approver-a", "approver-b"):
                await ok(
                    await http.post(
                        f"/v1/payment-batches/{bid}/approvals", headers=keys[approver], json={"decision": "approve"}
                    )
                )
            worker = start_worker(env)
            processes.append(worker)
            memory = {
                "service": PeakMemory(service.pid, 0.1, tree=True),
                "worker": PeakMemory(worker.pid, 0.1, tree=True),
            }
            for sampler in memory.values():
                sampler.start()
            tracked = {"service": service.pid, "worker": worker.pid, "simulator": simulator.process.pid}
            cpu_before = {name: process_cpu_seconds(pid) for name, pid in tracked.items()}
            await asyncio.sleep(1.0)
            t0 = time.perf_counter()
            await ok(
                await http.post(
                    f"/v1/payment-batches/{bid}/release", headers={**keys["finance"], "Idempotency-Key": "go"}
                )
            )
            # Polled with index probes only: counting 100,000 rows four times a second would take a
            # noticeable share of the database's CPU from the run it measures.
            all_submitted = None
            while True:
                if all_submitted is None and not await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM entitlements WHERE batch_id = $1 AND status = 'pending')",
                    uuid.UUID(bid),
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
            await conn.close()
            counters = (await http.get(f"{simulator.base_url}/admin/counters", params={"per_key": False})).json()
        print("B2 issuance — release → every entitlement issued")
        print(f"  machine: {machine()}")
        print(f"  batch: {size} entitlements, chunk 1000, one API process + one worker process + simulator")
        print(
            f"  set-up (not timed in B2): seed {seeded:.1f} s, create batch {created:.1f} s, submit {submitted:.1f} s"
        )
        print(f"  release → all submitted to the provider: {all_submitted:.1f} s")
        print(
            f"  release → batch {status}: {elapsed:.1f} s  ({size / elapsed:,.0f} entitlements/s); "
            f"{issued:,} of {size:,} entitlements issued"
        )
        print(
            f"  peak RSS: service {memory['service'].peak / 2**20:.0f} MiB,"
            f" worker {memory['worker'].peak / 2**20:.0f} MiB"
        )
        print("  CPU seconds during the run: " + ", ".join(f"{name} {seconds:.0f}" for name, seconds in cpu.items()))
        print(
            f"  provider: {counters['card_loads']} card loads, {counters['keys_received_more_than_once']} keys "
            f"received more than once, {counters['webhooks_sent']} webhooks delivered"
        )
        met = elapsed <= 60 and issued == size
        print(f"  target ≤ 60 s with every entitlement issued: {'met' if met else 'NOT met'}")
    finally:
        stop_processes(processes, 15)
        simulator.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("set DATABASE_URL to a PostgreSQL server (postgresql://user@host:port/db)")
    to_asyncpg_url(url)
    asyncio.run(run(args.size, url))


if __name__ == "__main__":
    main()
