"""B5: ledger export of 1,000,000 entries in CSV, Parquet and XLSX, and offline verification of the files.

The service (`cbi-service serve`, worker off) runs as its own OS process on a fresh database of the
PostgreSQL server in DATABASE_URL; entries are loaded beforehand through the ledger's bulk posting API
(two-entry transfers among 1,000 accounts, 10,000 per call). For each format the export is downloaded
over HTTP to a file while the server's resident memory is sampled every 50 ms; the figures are wall time,
throughput and peak RSS, each export on a freshly started server. Every file is then checked by
`cbi-service ledger verify` (a separate process, as an auditor would run it), timed.

`--baseline DIR` compares with another checkout of the service (say `git worktree add /tmp/main main`):
each format is exported by its server and by this one in turn, `--rounds` times, on the same database,
so that a noisy machine slows both alike; the ratio of the medians is printed. Only this checkout's
files are verified.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python benchmarks/b5_export.py \
        [--entries N] [--formats xlsx,csv] [--baseline DIR [--rounds R]]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    PeakMemory,
    free_port,
    libpq,
    machine,
    new_api_key,
    scratch_database,
    start_service,
    stop_processes,
    wait_http,
)
from cbi_service.auth.roles import Role  # noqa: E402
from cbi_service.kit.db import make_engine  # noqa: E402
from cbi_service.kit.settings import Settings  # noqa: E402
from ledger import EntrySpec, Ledger, TransactionSpec  # noqa: E402

ACCOUNTS = 1_000
PER_CALL = 10_000
FORMATS = ("csv", "parquet", "xlsx")
MEMORY_TARGET = 200 * 2**20


async def load(db_url: str, entries: int) -> float:
    """Post entries/2 transfers through `Ledger.post_many`; returns the seconds it took."""
    settings = Settings(database_url=db_url)
    assert settings.async_database_url
    engine = make_engine(settings.async_database_url, settings)
    rng = random.Random(5)
    started = time.perf_counter()
    try:
        async with engine.begin() as conn:
            ledger = Ledger(conn)
            funding = await ledger.create_account("bench:funding", "COP", "equity")
            accounts = [await ledger.create_account(f"bench:acct:{i:04d}", "COP", "asset") for i in range(ACCOUNTS)]
        transfers = entries // 2
        for first in range(0, transfers, PER_CALL):
            specs = []
            for n in range(first, min(first + PER_CALL, transfers)):
                source = funding if n < ACCOUNTS else rng.choice(accounts)
                target = accounts[n % ACCOUNTS]
                if target.id == source.id:
                    target = funding
                amount = rng.randrange(1, 50_000_00)
                specs.append(
                    TransactionSpec(
                        key=f"bench-{n}",
                        entries=[EntrySpec(source.id, -amount), EntrySpec(target.id, amount)],
                        kind="transfer",
                        references={"batch": str(first // PER_CALL)},
                    )
                )
            async with engine.begin() as conn:
                await Ledger(conn).post_many(specs)
    finally:
        await engine.dispose()
    return time.perf_counter() - started


async def api_key(db_url: str) -> dict[str, str]:
    _, raw = await new_api_key(db_url, "bench auditor", Role.auditor)
    return {"Authorization": f"Bearer {raw}"}


async def download(base: str, headers: dict[str, str], fmt: str, path: Path, pid: int) -> tuple[float, int]:
    """(seconds, peak RSS of the server) for one export streamed to `path`."""
    sampler = PeakMemory(pid, 0.05, tree=False)
    sampler.start()
    started = time.perf_counter()
    async with (
        httpx.AsyncClient(base_url=base, timeout=None) as http,
        http.stream("GET", "/v1/ledger/export", params={"format": fmt}, headers=headers) as response,
    ):
        response.raise_for_status()
        with path.open("wb") as file:
            async for chunk in response.aiter_raw():
                file.write(chunk)
    elapsed = time.perf_counter() - started
    sampler.running = False
    sampler.join()
    return elapsed, sampler.peak


def verify(path: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "cbi_service", "ledger", "verify", str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"verify failed: {done.stderr.strip()}")
    return elapsed, done.stdout.strip()


@dataclass(frozen=True)
class Export:
    seconds: float
    peak: int
    idle: int
    size: int


async def export_once(root: Path, env: dict[str, str], headers: dict[str, str], fmt: str, path: Path) -> Export:
    """One export of `fmt` by a fresh server of the checkout at `root`, downloaded to `path`."""
    port = free_port()
    service = start_service(port, env, root)
    try:
        base = f"http://127.0.0.1:{port}"
        await wait_http(f"{base}/healthz")
        idle = psutil.Process(service.pid).memory_info().rss
        seconds, peak = await download(base, headers, fmt, path, service.pid)
    finally:
        stop_processes([service], 30)
    return Export(seconds, peak, idle, path.stat().st_size)


def line(label: str, entries: int, export: Export) -> str:
    verdict = "ok" if export.peak < MEMORY_TARGET else "OVER TARGET"
    return (
        f"  {label:16} {export.seconds:7.1f} s  {entries / export.seconds:9,.0f} entries/s  "
        f"{export.size / 2**20:7.1f} MiB  peak RSS {export.peak / 2**20:5.0f} MiB "
        f"(idle {export.idle / 2**20:.0f}) {verdict}"
    )


async def run(entries: int, server_url: str, formats: list[str], baseline: Path | None, rounds: int) -> None:
    async with scratch_database(libpq(server_url, "postgres"), f"cbi_b5_{uuid.uuid4().hex[:8]}") as db_url:
        await measure(entries, db_url, formats, baseline, rounds)


async def measure(entries: int, db_url: str, formats: list[str], baseline: Path | None, rounds: int) -> None:
    load_seconds = await load(db_url, entries)
    headers = await api_key(db_url)
    env = {**os.environ, "DATABASE_URL": db_url, "CBI_LOG_LEVEL": "WARNING", "CBI_LOG_FORMAT": "json"}
    env.pop("PYTHONPATH", None)  # each server imports the checkout it runs in
    print("B5 ledger export")
    print(f"  machine: {machine()}")
    print(f"  loaded {entries:,} entries ({entries // 2:,} transfers) in {load_seconds:.1f} s")
    print(f"  peak RSS of the server process, each export on a fresh server; target under {MEMORY_TARGET >> 20} MiB")
    if baseline is not None:
        print(f"  baseline: {baseline} ({rounds} round(s), alternating with {ROOT})")
    verify_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    with tempfile.TemporaryDirectory(prefix="cbi-b5-") as tmp:
        for fmt in formats:
            path = Path(tmp) / f"ledger.{fmt}"
            if baseline is None:
                print(line(f"export {fmt}", entries, await export_once(ROOT, env, headers, fmt, path)))
                continue
            old: list[Export] = []
            new: list[Export] = []
            for _ in range(rounds):
                old.append(await export_once(baseline, env, headers, fmt, Path(tmp) / f"baseline.{fmt}"))
                print(line(f"baseline {fmt}", entries, old[-1]), flush=True)
                new.append(await export_once(ROOT, env, headers, fmt, path))
                print(line(f"export {fmt}", entries, new[-1]), flush=True)
            ratio = statistics.median(e.seconds for e in old) / statistics.median(e.seconds for e in new)
            memory = statistics.median(e.peak for e in new) / statistics.median(e.peak for e in old)
            print(f"  {fmt}: {ratio:.2f}x as fast as the baseline, with {memory:.2f}x its peak RSS")
        for fmt in formats:
            seconds, summary = await asyncio.to_thread(verify, Path(tmp) / f"ledger.{fmt}", verify_env)
            outcome = summary.split(": ", 1)[1]
            print(f"  verify {fmt:8} {seconds:7.1f} s  {entries / seconds:9,.0f} entries/s  ({outcome})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000, help="ledger entries to export (even)")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated, of csv, parquet, xlsx")
    parser.add_argument("--baseline", type=Path, help="another checkout of the service to compare with")
    parser.add_argument("--rounds", type=int, default=2, help="exports per format and checkout with --baseline")
    args = parser.parse_args()
    formats = [f for f in args.formats.split(",") if f]
    if unknown := set(formats) - set(FORMATS):
        parser.error(f"unknown formats: {', '.join(sorted(unknown))}")
    server_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    asyncio.run(run(args.entries, server_url, formats, args.baseline, args.rounds))


if __name__ == "__main__":
    main()
