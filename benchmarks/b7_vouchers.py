"""B7: paper vouchers redeemed at merchants, online one at a time and offline in a device's sync.

Processes, as in production: `--api-processes` copies of the API (`cbi-service serve`, uvicorn, each on its
own port, as behind a load balancer; the load spreads its connections over them) and one `cbi-service worker`
(it issues the vouchers on release, then idles), each its own OS process, sharing one voucher signing key,
on a fresh database of the PostgreSQL server in DATABASE_URL; the load generator is this process, on
127.0.0.1 only.

1. Set-up (timed apart): a `paper_voucher` programme, funding, `--vouchers` enrolled people, a batch of
   150,000.00 COP each, two approvals and the release; the worker issues every voucher (code and signed QR
   token). `--merchants` merchants of the programme, each with its merchant-bound API key.
2. `--rounds` alternations of
   - `/healthz` for `--healthz-seconds` over `--connections` keep-alive connections: the ceiling of this
     machine's HTTP stack (same servers, same middleware, no work), and
   - online redemptions as fast as they are answered over the same connections: `POST
     /v1/voucher-redemptions`, each with its own Idempotency-Key, by a random merchant, of a partial amount
     (three parts of 20,000.00 per voucher, in shuffled order), the voucher named by its QR token (three in
     four) or its typed code. Rate (answers/s), p50/p99; the ratio is the median of the rounds' (the machine
     is shared).
3. Online redemptions paced at half of that rate (or at `--paced-rate`, to compare two checkouts at one rate)
   for `--paced-seconds` (open loop: latency counts from the
   moment each request was due): p50/p99.
4. Offline: one merchant's device syncs `--scans` scanned vouchers (distinct vouchers, 50,000.00 each, in
   `POST /v1/voucher-redemptions/sync` requests of the most items the API takes), among them one in a
   hundred scanned a second time later for more than is left (a `conflict`) and one in two hundred with an
   altered token (`rejected`). Total wall time; then the same sync resent (every item `replayed`).
5. Checks: no 5xx; the ledger's trial balance is zero, its hash chain and every account's counters verify;
   funded = available + committed + disbursed for the programme; no voucher redeemed beyond its value, each
   voucher's redeemed amount is the sum of its accepted redemptions, each accepted redemption has exactly one
   ledger posting (and each posting its redemption), one online record per 201, the resent sync redeemed
   nothing, and the merchants' payables sum to what was redeemed.

Targets: online redemptions >= 20 % of the /healthz rate; p99 <= 100 ms at half of it; the sync of 10,000
scanned vouchers <= 10 s.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python benchmarks/b7_vouchers.py
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import uvloop
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    ENROL,
    Load,
    closed_loop,
    free_port,
    http_get,
    libpq,
    machine,
    new_api_key,
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
from cbi_service.auth.roles import Role  # noqa: E402
from cbi_service.kit.settings import to_asyncpg_url  # noqa: E402
from cbi_service.redemptions.schemas import MAX_SYNC_ITEMS  # noqa: E402
from ledger import Ledger  # noqa: E402

VALUE = "150000.00"
ONLINE_PARTS = ("20000.00", "20000.00", "20000.00")
PACED_PART = "100.00"
SCAN_AMOUNT = "50000.00"
PAYOUT = {"account_name": "Tienda de prueba SAS", "account_number": "0123456789", "bank_code": "1007"}


def cop(amount: str) -> dict[str, str]:
    return {"amount": amount, "currency": "COP"}


def http_post(path: str, headers: dict[str, str], body: dict[str, Any]) -> bytes:
    data = json.dumps(body, separators=(",", ":")).encode()
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{head}"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode() + data


@dataclass(frozen=True)
class Voucher:
    id: uuid.UUID
    code: str
    token: str


@dataclass
class Setup:
    """What the measurement phases run against."""

    db_url: str
    ports: list[int]
    processes: list[subprocess.Popen[bytes]]
    keys: dict[str, dict[str, str]]
    merchant_keys: list[dict[str, str]]
    programme_id: str
    vouchers: list[Voucher]
    issue_seconds: float
    issued_at: datetime
    load_at_start: str


class Online:
    """Online redemption requests, each with its own Idempotency-Key, a random merchant's key and the voucher
    by its token (three in four) or its code."""

    def __init__(self, merchant_keys: list[dict[str, str]], seed: int) -> None:
        self.merchant_keys = merchant_keys
        self.rng = random.Random(seed)

    def request(self, voucher: Voucher, amount: str) -> bytes:
        headers = {**self.rng.choice(self.merchant_keys), "Idempotency-Key": str(uuid.uuid4())}
        named = {"token": voucher.token} if self.rng.random() < 0.75 else {"code": voucher.code}
        return http_post("/v1/voucher-redemptions", headers, {**named, "amount": cop(amount)})


def tampered(token: str) -> str:
    """The token with its amount claim raised, the signature kept: what a forger would try."""
    header, claims, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    data["amt"] *= 10
    forged = base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def scans(vouchers: list[Voucher], count: int, issued_at: datetime) -> list[dict[str, Any]]:
    """`count` scans of one device: distinct vouchers, with one in a hundred scanned again later for more than
    is left and one in two hundred with an altered token, shuffled (the sync orders them by scan time)."""
    rng = random.Random(7)
    span = (datetime.now(UTC) - issued_at).total_seconds()
    items: list[dict[str, Any]] = []
    n = 0
    while len(items) < count:
        voucher = vouchers[n % len(vouchers)]
        at = issued_at + timedelta(seconds=span * rng.random() * 0.9)
        token = tampered(voucher.token) if n % 200 == 199 else voucher.token
        items.append(
            {"local_id": f"scan-{n}", "token": token, "amount": cop(SCAN_AMOUNT), "scanned_at": at.isoformat()}
        )
        if n % 100 == 50 and len(items) < count:
            later = at + timedelta(seconds=1)
            items.append(
                {
                    "local_id": f"scan-{n}-again",
                    "token": voucher.token,
                    "amount": cop(VALUE),
                    "scanned_at": later.isoformat(),
                }
            )
        n += 1
    rng.shuffle(items)
    return items


async def sync_all(
    http: httpx.AsyncClient, key: dict[str, str], items: list[dict[str, Any]]
) -> tuple[float, dict[str, int]]:
    """Every item synced by one device, `MAX_SYNC_ITEMS` a request: wall time and outcome counts."""
    counts: dict[str, int] = {}
    started = time.perf_counter()
    for start in range(0, len(items), MAX_SYNC_ITEMS):
        chunk = items[start : start + MAX_SYNC_ITEMS]
        result = await ok(
            await http.post("/v1/voucher-redemptions/sync", json={"device_id": "b7-phone", "items": chunk}, headers=key)
        )
        for name, n in result["counts"].items():
            counts[name] = counts.get(name, 0) + n
    return time.perf_counter() - started, counts


# --- the run ---


async def _issue_vouchers(
    http: httpx.AsyncClient, db_url: str, keys: dict[str, dict[str, str]], count: int
) -> tuple[str, float]:
    """Programme → funding → people → batch → approvals → release, then wait for the worker to issue all."""
    programme = await ok(
        await http.post(
            "/v1/programmes",
            headers=keys["admin"],
            json={
                "name": "B7",
                "country": "CO",
                "currency": "COP",
                "sector": "food_security",
                "delivery_mechanism": "paper_voucher",
                "provider": "paper_voucher",
                "voucher_validity_days": 30,
            },
        )
    )
    pid = programme["id"]
    await ok(
        await http.post(
            f"/v1/programmes/{pid}/funds",
            headers={**keys["finance"], "Idempotency-Key": "fund"},
            json={"amount": cop("100000000000.00"), "source": "bench", "reference": "B7"},
        )
    )
    conn = await asyncpg.connect(db_url)
    try:
        await seed_people(db_url, conn, uuid.UUID(int=1), count)
        await conn.execute(ENROL, uuid.UUID(pid), uuid.UUID(int=1))
        batch = await ok(
            await http.post(
                "/v1/payment-batches",
                headers=keys["officer"],
                json={"programme_id": pid, "name": "B7", "cycle": "2026-11", "amount": cop(VALUE)},
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
            if issued == count:
                return pid, time.perf_counter() - started
            if time.perf_counter() - started > 600:
                raise TimeoutError(f"only {issued} of {count} vouchers issued after 10 minutes")
            await asyncio.sleep(0.25)
    finally:
        await conn.close()


async def _merchants(http: httpx.AsyncClient, db_url: str, admin: dict[str, str], pid: str, count: int) -> list[Any]:
    keys = []
    for n in range(count):
        body = {"name": f"Tienda {n}", "country": "CO", "programme_ids": [pid], "payout": PAYOUT}
        merchant = await ok(await http.post("/v1/merchants", headers=admin, json=body))
        _, raw = await new_api_key(db_url, f"bench merchant {n}", Role.merchant, merchant_id=uuid.UUID(merchant["id"]))
        keys.append({"Authorization": f"Bearer {raw}"})
    return keys


async def run(args: argparse.Namespace, server_url: str) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    async with scratch_database(libpq(server_url, "postgres"), f"cbi_b7_{uuid.uuid4().hex[:8]}") as db_url:
        seed = base64.b64encode(secrets.token_bytes(32)).decode()
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "CBI_VOUCHER_SIGNING_KEY": seed,
            "CBI_LOG_LEVEL": "WARNING",
            "CBI_LOG_FORMAT": "json",
        }
        ports = [free_port() for _ in range(args.api_processes)]
        processes = [start_service(port, env) for port in ports]
        processes.append(start_worker(env))
        try:
            for port in ports:
                await wait_http(f"http://127.0.0.1:{port}/healthz")
            keys = await staff_headers(db_url)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[0]}", timeout=600) as http:
                programme_id, issue_seconds = await _issue_vouchers(http, db_url, keys, args.vouchers)
                issued_at = datetime.now(UTC)
                merchant_keys = await _merchants(http, db_url, keys["admin"], programme_id, args.merchants)
            conn = await asyncpg.connect(db_url)
            try:
                rows = await conn.fetch("SELECT id, voucher_code, voucher_token FROM entitlements ORDER BY id")
            finally:
                await conn.close()
            vouchers = [Voucher(r["id"], r["voucher_code"], r["voucher_token"]) for r in rows]
            setup = Setup(
                db_url, ports, processes, keys, merchant_keys, programme_id, vouchers, issue_seconds, issued_at, load
            )
            await _measure(args, setup)
        finally:
            stop_processes(processes, 15)


async def _measure(args: argparse.Namespace, setup: Setup) -> None:
    """Phases 2 to 5 of the module docstring."""
    ports, vouchers = setup.ports, setup.vouchers
    online = Online(setup.merchant_keys, seed=4)
    rng = random.Random(5)
    parts = [(v, amount) for v in vouchers for amount in ONLINE_PARTS]
    rng.shuffle(parts)
    redemption_requests = [online.request(v, amount) for v, amount in parts]
    part = -(-len(redemption_requests) // args.rounds)
    rounds: list[tuple[Load, Load]] = []
    redemptions = Load()
    cpu = 0.0
    services = setup.processes[: len(ports)]
    for r in range(args.rounds):
        health_r = await closed_loop(ports, [http_get("/healthz")] * 10**7, args.connections, args.healthz_seconds)
        cpu_before = sum(process_cpu_seconds(p.pid) for p in services)
        online_r = await closed_loop(
            ports, redemption_requests[r * part : (r + 1) * part], args.connections, args.max_seconds
        )
        cpu += sum(process_cpu_seconds(p.pid) for p in services) - cpu_before
        rounds.append((health_r, online_r))
        redemptions.add(online_r)
    cpu /= max(1, len(redemptions.latencies))
    ratio = statistics.median(o.rate / h.rate for h, o in rounds)

    half = args.paced_rate or statistics.median(o.rate for _, o in rounds) / 2
    shuffled = rng.sample(vouchers, len(vouchers))
    paced_requests = [
        online.request(v, PACED_PART)
        for _, v in zip(range(int(half * args.paced_seconds)), shuffled * 10, strict=False)
    ]
    at_half = await paced(ports, paced_requests, half, args.connections)

    items = scans(vouchers, args.scans, setup.issued_at)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[0]}", timeout=600) as http:
        sync_seconds, sync_counts = await sync_all(http, setup.merchant_keys[0], items)
        resync_seconds, resync_counts = await sync_all(http, setup.merchant_keys[0], items)
        balances = await ok(
            await http.get(f"/v1/programmes/{setup.programme_id}/balances", headers=setup.keys["finance"])
        )
    loads = [at_half, *(load for pair in rounds for load in pair)]
    errors = sum(n for load in loads for status, n in load.statuses.items() if status >= 500)
    created = sum(load.statuses.get(201, 0) for load in loads)
    checks = await _checks(setup.db_url, balances, created)
    replayed_only = resync_counts.get("replayed") == len(items) and not resync_counts.get("accepted")
    checks["the resent sync redeemed nothing again"] = "yes" if replayed_only else "NO"
    print("B7 vouchers — paper vouchers redeemed at merchants, online and offline")
    print(f"  machine: {machine()}; load average at start {setup.load_at_start}")
    print(
        f"  service: {len(ports)} cbi-service serve (uvicorn) processes + one cbi-service worker process; "
        f"load: {args.connections} keep-alive connections from this process, spread over the API processes"
    )
    print(
        f"  set-up (not timed): {len(vouchers)} paper vouchers released and issued by the worker in "
        f"{setup.issue_seconds:.1f} s; {len(setup.merchant_keys)} merchants"
    )
    for n, (health_r, online_r) in enumerate(rounds, 1):
        print(f"  round {n}: /healthz (ceiling of the HTTP stack) {health_r.summary()}")
        print(
            f"           online redemptions as fast as answered {online_r.summary()}; "
            f"ratio {online_r.rate / health_r.rate:.0%}"
        )
    print(f"  online redemptions, all rounds: {redemptions.summary()}; API CPU {cpu * 1e6:.0f} µs/request")
    pace = "at a rate given" if args.paced_rate else "at half that rate"
    print(f"  online redemptions paced {pace} ({half:,.0f}/s): {at_half.summary()}")
    print(
        f"  offline sync of {len(items)} scans ({MAX_SYNC_ITEMS} items a request): {sync_seconds:.2f} s "
        f"({len(items) / sync_seconds:,.0f} items/s), outcomes {sync_counts}"
    )
    print(f"  the same sync resent: {resync_seconds:.2f} s, outcomes {resync_counts}")
    print(f"  checks: {errors} 5xx; " + "; ".join(f"{label} {value}" for label, value in checks.items()))
    print(
        f"  target online rate >= 20 % of /healthz (median of the rounds): {ratio:.0%} — "
        f"{'met' if ratio >= 0.2 else 'NOT met'}; "
        + (
            f"p99 at the rate given: {at_half.ms(0.99):.0f} ms (the target is at half the measured rate); "
            if args.paced_rate
            else f"target p99 <= 100 ms at half rate: {at_half.ms(0.99):.0f} ms — "
            f"{'met' if at_half.ms(0.99) <= 100 else 'NOT met'}; "
        )
        + f"target sync <= 10 s: {sync_seconds:.1f} s — {'met' if sync_seconds <= 10 else 'NOT met'}"
    )


INVARIANTS = {
    "vouchers redeemed beyond their value": "SELECT count(*) FROM entitlements WHERE redeemed_minor > amount_minor",
    "vouchers whose redeemed amount is not the sum of their accepted redemptions": """
        SELECT count(*) FROM entitlements e
         WHERE e.redeemed_minor <> (SELECT coalesce(sum(r.amount_minor), 0) FROM voucher_redemptions r
                                     WHERE r.voucher_id = e.id AND r.status = 'accepted')
    """,
    "accepted redemptions without exactly one ledger posting": """
        SELECT count(*) FROM voucher_redemptions r
          LEFT JOIN (SELECT (refs ->> 'redemption_id')::uuid AS id, count(*) AS n FROM ledger.transactions
                      WHERE kind = 'redemption' GROUP BY 1) t ON t.id = r.id
         WHERE r.status = 'accepted' AND t.n IS DISTINCT FROM 1
    """,
    "redemption postings of no accepted redemption": """
        SELECT count(*) FROM ledger.transactions t
         WHERE t.kind = 'redemption'
           AND NOT EXISTS (SELECT 1 FROM voucher_redemptions r
                            WHERE r.id = (t.refs ->> 'redemption_id')::uuid AND r.status = 'accepted')
    """,
}


async def _checks(db_url: str, balances: dict[str, Any], created: int) -> dict[str, Any]:
    """The invariants after the run; `created`, the 201 answers to online redemptions."""

    def minor(key: str) -> int:
        return int(balances[key]["amount"].replace(".", ""))

    checks: dict[str, Any] = {}
    identity = minor("funded") == minor("available") + minor("committed") + minor("disbursed")
    checks["funded = available + committed + disbursed"] = "holds" if identity else "BROKEN"
    engine = create_async_engine(to_asyncpg_url(db_url))
    try:
        async with engine.connect() as conn:
            for label, query in INVARIANTS.items():
                checks[label] = (await conn.execute(text(query))).scalar_one()
            redeemed = (
                await conn.execute(
                    text("SELECT coalesce(sum(amount_minor), 0) FROM voucher_redemptions WHERE status = 'accepted'")
                )
            ).scalar_one()
            payables = (
                await conn.execute(
                    text("SELECT coalesce(sum(posted), 0) FROM ledger.accounts WHERE code LIKE 'prog:%:payable:%'")
                )
            ).scalar_one()
            checks["merchants' payables = accepted redemptions"] = (
                "yes"
                if payables == redeemed == minor("redeemed")
                else (f"NO ({payables} vs {redeemed} vs {minor('redeemed')})")
            )
            online = (
                await conn.execute(text("SELECT count(*) FROM voucher_redemptions WHERE channel = 'online'"))
            ).scalar_one()
            checks["online records = 201 answers"] = "yes" if online == created else f"NO ({online} vs {created})"
            ledger = Ledger(conn)
            trial = await ledger.trial_balance()
            checks["trial balance"] = "zero" if trial.balanced else "NOT zero"
            mismatches = await ledger.verify_balances()
            checks["accounts whose counters disagree with their entries"] = len(mismatches)
            report = await ledger.verify_chain()
            checks["hash chain"] = (
                f"verified ({report.transactions} transactions)" if report.ok else f"BROKEN: {report.problem}"
            )
    finally:
        await engine.dispose()
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vouchers", type=int, default=10_000, help="vouchers issued in the set-up")
    parser.add_argument("--merchants", type=int, default=20, help="merchants of the programme")
    parser.add_argument("--api-processes", type=int, default=2, help="cbi-service serve processes")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections of the load")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of /healthz and online phases")
    parser.add_argument("--healthz-seconds", type=float, default=3.0, help="length of each /healthz phase")
    parser.add_argument("--paced-seconds", type=float, default=10.0, help="length of the paced phase")
    parser.add_argument(
        "--paced-rate", type=float, help="redemptions/s of the paced phase (default: half the measured rate)"
    )
    parser.add_argument("--max-seconds", type=float, default=20.0, help="bound on each as-fast-as-answered phase")
    parser.add_argument("--scans", type=int, default=10_000, help="scanned vouchers one device syncs")
    args = parser.parse_args()
    server_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    uvloop.run(run(args, server_url))


if __name__ == "__main__":
    main()
