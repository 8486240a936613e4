"""B1: ledger throughput — bulk posting, contended single postings, and a raw COPY baseline (contract §12).

    .venv/bin/python benchmarks/b1_ledger.py [--transfers 100000] [--accounts 1000] [--batch 10000]
                                            [--contended-seconds 20] [--tasks 16] [--hot-accounts 10]

Uses DATABASE_URL (a fresh database is created on that server and dropped afterwards) or, without it, an
embedded PostgreSQL from pgserver in a temporary folder. The schema comes from the project's migrations.
After the runs every invariant is checked on the whole ledger: each transaction sums to zero, each
account's counters equal the sum of its entries (and every running balance is right), the trial balance
balances and the hash chain verifies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cpu_model, libpq, scratch_database
from cbi_service.kit.settings import to_asyncpg_url
from ledger import AccountKind, EntrySpec, Ledger, PostingWriter, TransactionSpec


@contextlib.contextmanager
def server() -> Iterator[str]:
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield libpq(configured)
        return
    from cbi_service.embedded import embedded_postgres

    with tempfile.TemporaryDirectory(prefix="b1-pg-") as tmp, embedded_postgres(Path(tmp)) as url:
        yield url


def transfer(key: str, source: uuid.UUID, target: uuid.UUID, amount: int) -> TransactionSpec:
    return TransactionSpec(key, [EntrySpec(source, -amount), EntrySpec(target, amount)])


async def create_accounts(engine: AsyncEngine, prefix: str, count: int) -> list[uuid.UUID]:
    async with engine.begin() as conn:
        ledger = Ledger(conn)
        return [(await ledger.create_account(f"{prefix}-{i:05d}", "COP", AccountKind.ASSET)).id for i in range(count)]


async def bulk(engine: AsyncEngine, transfers: int, accounts: int, batch: int) -> float:
    ids = await create_accounts(engine, "bulk", accounts)
    rnd = random.Random(1)
    specs = []
    for i in range(transfers):
        source, target = rnd.sample(ids, 2)
        specs.append(transfer(f"bulk-{i:08d}", source, target, rnd.randint(1, 1_000_000)))
    started = time.perf_counter()
    for start in range(0, transfers, batch):
        async with engine.begin() as conn:
            await Ledger(conn).post_many(specs[start : start + batch])
    return transfers / (time.perf_counter() - started)


async def copy_baseline(url: str, transfers: int, batch: int) -> float:
    """The same rows (one per transaction, two per entry pair) COPYed into plain tables without indexes."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """
            CREATE TABLE b1_copy_transactions (id uuid, key text, kind text, phase text, currency text,
                refs jsonb, description text, posted_at timestamptz, chain smallint, seq bigint,
                prev_hash bytea, hash bytea);
            CREATE TABLE b1_copy_entries (tx_id uuid, idx smallint, account_id uuid, amount bigint,
                currency text, posted boolean, posted_at timestamptz, account_seq bigint, balance_after bigint);
            """
        )
        rnd = random.Random(2)
        accounts = [uuid.uuid4() for _ in range(1000)]
        at = datetime.now(UTC)
        batches = []
        for start in range(0, transfers, batch):
            txs, entries = [], []
            for i in range(start, min(start + batch, transfers)):
                tx_id = uuid.uuid4()
                amount = rnd.randint(1, 1_000_000)
                txs.append(
                    (
                        tx_id,
                        f"copy-{i:08d}",
                        "transfer",
                        "posted",
                        "COP",
                        "{}",
                        "",
                        at,
                        0,
                        i + 1,
                        rnd.randbytes(32),
                        rnd.randbytes(32),
                    )
                )
                source, target = rnd.sample(accounts, 2)
                entries.append((tx_id, 0, source, -amount, "COP", True, at, i + 1, 0))
                entries.append((tx_id, 1, target, amount, "COP", True, at, i + 1, 0))
            batches.append((txs, entries))
        started = time.perf_counter()
        for txs, entries in batches:
            async with conn.transaction():
                await conn.copy_records_to_table("b1_copy_transactions", records=txs)
                await conn.copy_records_to_table("b1_copy_entries", records=entries)
        rate = transfers / (time.perf_counter() - started)
        await conn.execute("DROP TABLE b1_copy_transactions; DROP TABLE b1_copy_entries")
        return rate
    finally:
        await conn.close()


async def contended(
    engine: AsyncEngine, seconds: float, tasks: int, hot: int, *, grouped: bool
) -> tuple[float, list[float]]:
    """`tasks` tasks posting single transfers among `hot` accounts: each in its own database transaction
    (`Ledger.post`), or through one `PostingWriter` that commits concurrent transfers together."""
    ids = await create_accounts(engine, "hot-grouped" if grouped else "hot", hot)
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    writer = PostingWriter(engine)

    async def worker(number: int) -> None:
        rnd = random.Random(100 + number)
        prefix = f"hot-{'g' if grouped else 's'}-{number}"
        n = 0
        async with engine.connect() as conn:
            ledger = Ledger(conn)
            while time.perf_counter() < deadline:
                source, target = rnd.sample(ids, 2)
                spec = transfer(f"{prefix}-{n}", source, target, rnd.randint(1, 10_000))
                began = time.perf_counter()
                if grouped:
                    await writer.post(spec)
                else:
                    await conn.begin()
                    await ledger.post(spec)
                    await conn.commit()
                latencies.append(time.perf_counter() - began)
                n += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(tasks)))
    rate = len(latencies) / (time.perf_counter() - started)
    await writer.aclose()
    return rate, latencies


async def contended_baseline(url: str, seconds: float, tasks: int, hot: int) -> float:
    """The floor of the contended phase without the ledger: each transaction locks and updates two of the
    same hot rows and commits (what any correct design must at least do)."""
    setup = await asyncpg.connect(url)
    await setup.execute(
        f"CREATE TABLE b1_hot (id int PRIMARY KEY, balance bigint NOT NULL);"
        f"INSERT INTO b1_hot SELECT g, 0 FROM generate_series(1, {hot}) g"
    )
    deadline = time.perf_counter() + seconds
    done = 0

    async def worker(number: int) -> None:
        nonlocal done
        rnd = random.Random(500 + number)
        conn = await asyncpg.connect(url)
        try:
            while time.perf_counter() < deadline:
                source, target = sorted(rnd.sample(range(1, hot + 1), 2))
                async with conn.transaction():
                    # Rows locked in id order, as the ledger does, so the baseline cannot deadlock either.
                    await conn.execute(
                        "WITH locked AS (SELECT id FROM b1_hot WHERE id IN ($1, $2) ORDER BY id FOR UPDATE) "
                        "UPDATE b1_hot h SET balance = balance + CASE WHEN h.id = $1 THEN -1 ELSE 1 END "
                        "FROM locked WHERE h.id = locked.id",
                        source,
                        target,
                    )
                done += 1
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(tasks)))
    rate = done / (time.perf_counter() - started)
    await setup.execute("DROP TABLE b1_hot")
    await setup.close()
    return rate


INVARIANTS = {
    "transactions not summing to zero": """
        SELECT count(*) FROM (SELECT tx_id FROM ledger.entries GROUP BY tx_id, currency HAVING sum(amount) <> 0) x
    """,
    "transactions with fewer than two entries": """
        SELECT count(*) FROM ledger.transactions t
         WHERE (SELECT count(*) FROM ledger.entries e WHERE e.tx_id = t.id) < 2
    """,
    "accounts whose balance is not the sum of their entries": """
        SELECT count(*) FROM ledger.accounts a
          LEFT JOIN (SELECT account_id, sum(amount) AS total, count(*) AS n, max(account_seq) AS last
                       FROM ledger.entries WHERE posted GROUP BY account_id) s ON s.account_id = a.id
         WHERE a.posted <> coalesce(s.total, 0) OR a.entry_seq <> coalesce(s.n, 0) OR a.entry_seq <> coalesce(s.last, 0)
    """,
    "entries with a wrong running balance": """
        SELECT count(*) FROM (
            SELECT balance_after,
                   coalesce(sum(amount) FILTER (WHERE posted) OVER (PARTITION BY account_id ORDER BY account_seq), 0)
                       AS running
              FROM ledger.entries) x
         WHERE balance_after <> running
    """,
    "currencies whose entries do not sum to zero": """
        SELECT count(*) FROM (SELECT currency FROM ledger.entries GROUP BY currency HAVING sum(amount) <> 0) x
    """,
}


async def check_invariants(engine: AsyncEngine) -> bool:
    ok = True
    async with engine.connect() as conn:
        for label, query in INVARIANTS.items():
            bad = (await conn.execute(text(query))).scalar_one()
            print(f"  {label}: {bad}")
            ok &= bad == 0
        ledger = Ledger(conn)
        mismatches = await ledger.verify_balances()
        print(f"  accounts whose counters disagree with their entries (Ledger.verify_balances): {len(mismatches)}")
        ok &= not mismatches
        trial = await ledger.trial_balance()
        print(f"  trial balance balanced: {trial.balanced} ({len(trial.lines)} accounts)")
        started = time.perf_counter()
        report = await ledger.verify_chain()
        print(
            f"  hash chain: {'verified' if report.ok else report.problem} — {report.transactions} transactions, "
            f"{report.rows} entries, {len(report.chains)} stripes, {time.perf_counter() - started:.1f} s"
        )
        ok &= trial.balanced and report.ok
    return ok


async def run(url: str, args: argparse.Namespace) -> bool:
    engine = create_async_engine(to_asyncpg_url(url), pool_size=args.tasks + 2, max_overflow=0)
    try:
        async with engine.connect() as conn:
            version = (await conn.execute(text("SHOW server_version"))).scalar_one()
            sync_commit = (await conn.execute(text("SHOW synchronous_commit"))).scalar_one()
        print(f"postgres:   {version} (synchronous_commit={sync_commit})")
        print(f"load avg:   {' '.join(f'{x:.2f}' for x in os.getloadavg())} at start")
        print()
        rate = await bulk(engine, args.transfers, args.accounts, args.batch)
        print(
            f"bulk:       {rate:,.0f} transfers/s  ({args.transfers:,} two-entry transfers over {args.accounts:,} "
            f"accounts, post_many in calls of {args.batch:,}, one DB transaction per call)"
        )
        baseline = await copy_baseline(libpq(url), args.transfers, args.batch)
        print(f"COPY:       {baseline:,.0f} transfers/s  (the same rows, raw COPY into plain unindexed tables)")
        print(f"ratio:      {rate / baseline:.2f} of raw COPY")
        # Settle the database between the phases as autovacuum eventually would (statistics and the
        # visibility map for the tables the bulk phase filled), so the contended phase measures postings
        # rather than a vacuum running beside them.
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM (ANALYZE) ledger.transactions, ledger.entries, ledger.accounts"))
        if args.contended_seconds > 0:
            for grouped, label in ((False, "a DB transaction per transfer"), (True, "group commit, PostingWriter")):
                contended_rate, latencies = await contended(
                    engine, args.contended_seconds, args.tasks, args.hot_accounts, grouped=grouped
                )
                cuts = statistics.quantiles(latencies, n=100)
                print(
                    f"contended:  {contended_rate:,.0f} transfers/s  ({label}; {args.tasks} tasks posting single "
                    f"transfers among {args.hot_accounts} hot accounts for {args.contended_seconds:g} s; latency "
                    f"p50 {cuts[49] * 1000:.1f} ms, p99 {cuts[98] * 1000:.1f} ms)"
                )
            floor = await contended_baseline(libpq(url), args.contended_seconds, args.tasks, args.hot_accounts)
            print(
                f"hot rows:   {floor:,.0f} transactions/s  (baseline without the ledger: the same tasks each "
                f"updating two of {args.hot_accounts} hot rows and committing)"
            )
        print()
        print("invariants:")
        ok = await check_invariants(engine)
        print(f"  all invariants hold: {ok}")
        print(f"load avg:   {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end (the machine may be shared)")
        return ok
    finally:
        await engine.dispose()


async def measure(server_url: str, args: argparse.Namespace) -> bool:
    """The runs on a fresh migrated database of `server_url`, dropped afterwards."""
    async with scratch_database(server_url, f"b1_ledger_{uuid.uuid4().hex[:10]}") as url:
        return await run(url, args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transfers", type=int, default=100_000)
    parser.add_argument("--accounts", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=10_000, help="transfers per post_many call")
    parser.add_argument("--contended-seconds", type=float, default=20.0)
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--hot-accounts", type=int, default=10)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()

    print("B1 ledger benchmark")
    print(f"machine:    {os.cpu_count()} CPUs, {cpu_model()}, {platform.system()} {platform.release()}")
    print(f"python:     {platform.python_version()} ({platform.python_implementation()}), event loop {args.loop}")
    with server() as server_url:
        bench = measure(server_url, args)
        if args.loop == "uvloop":
            import uvloop

            ok = uvloop.run(bench)
        else:
            ok = asyncio.run(bench)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
