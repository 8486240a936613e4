"""B4: provider webhooks ingested and applied per second, with signature checks and idempotency.

Processes, as in production: the API (`cbi-service serve`: uvicorn), one `cbi-service worker` (which
applies the stored events) and, for the set-up only, the provider simulator, each its own OS process, on a
fresh database of the PostgreSQL server in DATABASE_URL; the load generator is this process, on 127.0.0.1
only.

1. Set-up (timed apart): a voucher programme, funding, `--vouchers` enrolled people, a batch, two
   approvals and the release; the simulator issues the vouchers and reports each with a signed
   `entitlement.issued` webhook, and the run waits until every voucher is issued. The simulator and the
   worker stop, so the next phase measures what the API alone can take in.
2. `--rounds` alternations of
   - `/healthz` for `--healthz-seconds` over `--connections` keep-alive connections: the ceiling of this
     machine's HTTP stack (same server, same middleware, no work), and
   - webhooks as fast as they are answered over the same connections: a share of three partial
     redemptions per voucher, each signed with `standardwebhooks` as a provider does, one in ten
     delivered a second time under the same webhook-id; each answered once durably stored. Ingest rate
     (2xx/s), p50/p99. The ratio reported is the median of the rounds' (the machine is shared).
3. Webhooks paced at half of that ingest rate for `--paced-seconds` (open loop: latency counts from the
   moment each request was due): p50/p99.
4. The worker starts again: the rate at which it applies the stored events (applied/s); then webhooks
   paced at that rate with the worker applying them as they come (the sustainable steady state): p50/p99.
5. Checks: no 5xx; every voucher's redeemed value is the sum of its distinct redemptions; the ledger
   identity funded = available + committed + disbursed holds.

Targets: webhook ingest rate >= 40 % of the /healthz rate; p99 <= 100 ms at half of it.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python benchmarks/b4_webhooks.py
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvloop
from standardwebhooks import Webhook

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapters.simulator import SimulatorProcess  # noqa: E402
from benchmarks.common import (  # noqa: E402
    ENROL,
    Load,
    closed_loop,
    free_port,
    http_get,
    libpq,
    machine,
    ok,
    paced,
    process_cpu_seconds,
    scratch_database,
    seed_people,
    staff_headers,
    start_service,
    start_worker,
    stop_processes,
    wait_http,
)

PROVIDER = "bench-vouchers"
REDEMPTIONS = ("20000.00", "20000.00", "20000.00")
PACED_REDEMPTION = "100.00"


class Signer:
    """Builds webhook requests exactly as a provider does: Standard Webhooks over the raw body."""

    def __init__(self, secret: str) -> None:
        self._hook = Webhook(secret)

    def request(self, webhook_id: str, event: dict[str, Any]) -> bytes:
        now = datetime.now(UTC)
        body = json.dumps(event, separators=(",", ":"))
        head = (
            f"POST /v1/webhooks/{PROVIDER} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"webhook-id: {webhook_id}\r\nwebhook-timestamp: {int(now.timestamp())}\r\n"
            f"webhook-signature: {self._hook.sign(webhook_id, now, body)}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body.encode()


def redemption(entitlement_id: uuid.UUID, provider_ref: str, amount: str) -> dict[str, Any]:
    return {
        "type": "voucher.redeemed",
        "timestamp": datetime.now(UTC).isoformat(),
        "data": {
            "entitlement_id": str(entitlement_id),
            "provider_ref": provider_ref,
            "amount": {"amount": amount, "currency": "COP"},
            "merchant": "Supermercado La Economía",
        },
    }


# --- the run ---


async def _issue_vouchers(
    http: httpx.AsyncClient, db_url: str, keys: dict[str, dict[str, str]], vouchers: int
) -> tuple[str, float]:
    """Programme → funding → people → batch → approvals → release, then wait for the simulator's webhooks."""
    conn = await asyncpg.connect(db_url)
    try:
        return await _release_and_wait(http, conn, db_url, keys, vouchers)
    finally:
        await conn.close()


async def _release_and_wait(
    http: httpx.AsyncClient, conn: asyncpg.Connection, db_url: str, keys: dict[str, dict[str, str]], vouchers: int
) -> tuple[str, float]:
    programme = await ok(
        await http.post(
            "/v1/programmes",
            headers=keys["admin"],
            json={
                "name": "B4",
                "country": "CO",
                "currency": "COP",
                "sector": "food_security",
                "delivery_mechanism": "voucher",
                "provider": PROVIDER,
                "voucher_validity_days": 90,
            },
        )
    )
    pid = programme["id"]
    await ok(
        await http.post(
            f"/v1/programmes/{pid}/funds",
            headers={**keys["finance"], "Idempotency-Key": "fund"},
            json={"amount": {"amount": "100000000000.00", "currency": "COP"}, "source": "bench", "reference": "B4"},
        )
    )
    await seed_people(db_url, conn, uuid.UUID(int=1), vouchers)
    await conn.execute(ENROL, uuid.UUID(pid), uuid.UUID(int=1))
    batch = await ok(
        await http.post(
            "/v1/payment-batches",
            headers=keys["officer"],
            json={
                "programme_id": pid,
                "name": "B4",
                "cycle": "2026-11",
                "amount": {"amount": "100000.00", "currency": "COP"},
            },
        )
    )
    bid = batch["id"]
    await ok(await http.post(f"/v1/payment-batches/{bid}/submit", headers=keys["officer"]))
    for approver in ("approver-a", "approver-b"):
        await ok(
            await http.post(
                f"/v1/payment-batches/{bid}/approvals", headers=keys[approver], json={"decision": "approve"}
            )
        )
    started = time.perf_counter()
    await ok(
        await http.post(f"/v1/payment-batches/{bid}/release", headers={**keys["finance"], "Idempotency-Key": "go"})
    )
    while True:
        issued = await conn.fetchval(
            "SELECT count(*) FROM entitlements WHERE batch_id = $1 AND status = 'issued'", uuid.UUID(bid)
        )
        if issued == vouchers:
            return pid, time.perf_counter() - started
        if time.perf_counter() - started > 600:
            raise TimeoutError(f"only {issued} of {vouchers} vouchers issued after 10 minutes")
        await asyncio.sleep(0.25)


async def _wait_applied(conn: asyncpg.Connection, timeout: float) -> tuple[datetime, int]:
    """Until the inbox holds nothing waiting; returns when the last event was applied and how many ran."""
    deadline = time.perf_counter() + timeout
    while await conn.fetchval("SELECT count(*) FROM webhook_events WHERE status = 'received'"):
        if time.perf_counter() > deadline:
            raise TimeoutError("stored events were not all applied in time")
        await asyncio.sleep(0.1)
    last, count = await conn.fetchrow(
        "SELECT max(processed_at), count(*) FROM webhook_events WHERE event_type = 'voucher.redeemed'"
    )
    return last, count


@dataclass
class Setup:
    """What the measurement phases run against."""

    db_url: str
    port: int
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]]
    signer: Signer
    keys: dict[str, dict[str, str]]
    programme_id: str
    issue_seconds: float
    load_at_start: str


async def run(args: argparse.Namespace, server_url: str) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    async with scratch_database(libpq(server_url, "postgres"), f"cbi_b4_{uuid.uuid4().hex[:8]}") as db_url:
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        port = free_port()
        with SimulatorProcess.start(f"http://127.0.0.1:{port}/v1/webhooks/{PROVIDER}", secret) as simulator:
            provider = {"adapter": "voucher", "base_url": simulator.base_url, "webhook_secret": secret}
            env = {
                **os.environ,
                "DATABASE_URL": db_url,
                "CBI_PROVIDERS": json.dumps({PROVIDER: {**provider, "chunk_size": 1000}}),
                "CBI_LOG_LEVEL": "WARNING",
                "CBI_LOG_FORMAT": "json",
            }
            processes = [start_service(port, env), start_worker(env)]
            try:
                await wait_http(f"http://127.0.0.1:{port}/healthz")
                keys = await staff_headers(db_url)
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
                    programme_id, issue_seconds = await _issue_vouchers(http, db_url, keys, args.vouchers)
                simulator.stop()
                stop_processes(processes[1:], 15)
                setup = Setup(db_url, port, env, processes, Signer(secret), keys, programme_id, issue_seconds, load)
                await _measure(args, setup)
            finally:
                stop_processes(processes, 15)


async def _measure(args: argparse.Namespace, setup: Setup) -> None:
    """Phases 2 to 5 of the module docstring, from the API running and the worker stopped."""
    port, signer, keys = setup.port, setup.signer, setup.keys
    service = setup.processes[0]
    conn = await asyncpg.connect(setup.db_url)
    try:
        vouchers = await conn.fetch("SELECT id, provider_ref FROM entitlements ORDER BY id")
        rng = random.Random(4)
        events = [
            (f"msg_b4_{i}_{n}", redemption(v["id"], v["provider_ref"], amount))
            for i, v in enumerate(vouchers)
            for n, amount in enumerate(REDEMPTIONS)
        ]
        rng.shuffle(events)
        stream = list(events)
        for repeat in rng.sample(events, len(events) // 10):
            stream.insert(rng.randrange(len(stream) + 1), repeat)
        webhook_requests = [signer.request(webhook_id, event) for webhook_id, event in stream]

        part = -(-len(webhook_requests) // args.rounds)
        rounds: list[tuple[Load, Load]] = []
        ingest = Load()
        cpu_ingest = 0.0
        for r in range(args.rounds):
            health_r = await closed_loop([port], [http_get("/healthz")] * 10**7, args.connections, args.healthz_seconds)
            cpu_before = process_cpu_seconds(service.pid)
            ingest_r = await closed_loop(
                [port], webhook_requests[r * part : (r + 1) * part], args.connections, args.max_seconds
            )
            cpu_ingest += process_cpu_seconds(service.pid) - cpu_before
            rounds.append((health_r, ingest_r))
            ingest.add(ingest_r)
        cpu_ingest /= max(1, len(ingest.latencies))
        ratio = statistics.median(i.rate / h.rate for h, i in rounds)

        half = statistics.median(i.rate for _, i in rounds) / 2
        paced_requests = [
            signer.request(f"msg_b4_half_{i}", redemption(v["id"], v["provider_ref"], PACED_REDEMPTION))
            for i, v in zip(range(int(half * args.paced_seconds)), vouchers * 10, strict=False)
        ]
        at_half = await paced([port], paced_requests, half, args.connections)

        started = datetime.now(UTC)
        setup.processes.append(start_worker(setup.env))
        last_applied, applied = await _wait_applied(conn, timeout=args.max_seconds * 10)
        apply_rate = applied / (last_applied - started).total_seconds()

        sustained = [
            signer.request(f"msg_b4_steady_{i}", redemption(v["id"], v["provider_ref"], PACED_REDEMPTION))
            for i, v in zip(range(int(apply_rate * args.paced_seconds)), reversed(vouchers), strict=False)
        ]
        steady = await paced([port], sustained, apply_rate, args.connections)
        await _wait_applied(conn, timeout=args.max_seconds * 10)
        sent = len(events) + len(paced_requests) + len(sustained)

        wrong = await conn.fetchval(
            """
            SELECT count(*) FROM entitlements e
             WHERE e.redeemed_minor <> (SELECT coalesce(sum((w.event->>'amount_minor')::bigint), 0)
                                          FROM webhook_events w
                                         WHERE w.entitlement_id = e.id AND w.status = 'applied'
                                           AND w.event_type = 'voucher.redeemed')
            """
        )
        redemptions_applied = await conn.fetchval(
            "SELECT count(*) FROM webhook_events WHERE event_type = 'voucher.redeemed' AND status = 'applied'"
        )
        outcomes = dict(await conn.fetch("SELECT status, count(*) FROM webhook_events GROUP BY status"))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            balances = await ok(
                await http.get(f"/v1/programmes/{setup.programme_id}/balances", headers=keys["finance"])
            )

        def minor(key: str) -> int:
            return int(balances[key]["amount"].replace(".", ""))

        identity = minor("funded") == minor("available") + minor("committed") + minor("disbursed")
        loads = [at_half, steady, *(load for pair in rounds for load in pair)]
        errors = sum(n for load in loads for status, n in load.statuses.items() if status >= 500)
        print("B4 webhooks — signed provider events ingested and applied")
        print(f"  machine: {machine()}; load average at start {setup.load_at_start}")
        print(
            f"  service: cbi-service serve (uvicorn) + one cbi-service worker process (stopped while ingesting); "
            f"load: {args.connections} keep-alive connections from this process"
        )
        print(f"  set-up (not timed): {len(vouchers)} vouchers released and issued via simulator webhooks in "
              f"{setup.issue_seconds:.1f} s")  # fmt: skip
        for n, (health_r, ingest_r) in enumerate(rounds, 1):
            print(f"  round {n}: /healthz (ceiling of the HTTP stack) {health_r.summary()}")
            print(
                f"           webhooks as fast as answered {ingest_r.summary()};"
                f" ratio {ingest_r.rate / health_r.rate:.0%}"
            )
        print(
            f"  webhooks, all rounds ({len(events)} events + {len(stream) - len(events)} redeliveries): "
            f"{ingest.summary()}; API CPU {cpu_ingest * 1e6:.0f} µs/request"
        )
        print(f"  webhooks paced at half the ingest rate ({half:,.0f}/s): {at_half.summary()}")
        print(f"  applied by the worker (started again): {applied} stored redemption events, {apply_rate:,.0f}/s")
        print(f"  webhooks paced at the worker's apply rate ({apply_rate:,.0f}/s), worker applying: {steady.summary()}")
        print(
            f"  checks: {errors} 5xx; inbox {outcomes}; {redemptions_applied} redemptions applied of "
            f"{sent} distinct sent; vouchers whose redeemed value differs from their "
            f"applied redemptions: {wrong}; ledger identity {'holds' if identity else 'BROKEN'}"
        )
        print(
            f"  target webhook rate >= 40 % of /healthz (median of the rounds): {ratio:.0%} — "
            f"{'met' if ratio >= 0.4 else 'NOT met'}; "
            f"target p99 <= 100 ms at half rate: {at_half.ms(0.99):.0f} ms — "
            f"{'met' if at_half.ms(0.99) <= 100 else 'NOT met'}"
        )
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vouchers", type=int, default=5000, help="vouchers issued in the set-up")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections of the load")
    parser.add_argument("--rounds", type=int, default=5, help="alternations of /healthz and webhook phases")
    parser.add_argument("--healthz-seconds", type=float, default=3.0, help="length of each /healthz phase")
    parser.add_argument("--paced-seconds", type=float, default=10.0, help="length of the paced phase")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="bound on each as-fast-as-answered phase")
    args = parser.parse_args()
    server_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    uvloop.run(run(args, server_url))


if __name__ == "__main__":
    main()
