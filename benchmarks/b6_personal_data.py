"""B6 personal data: B3 with personal data sealed at rest beside B3 without, and a key rotation.

1. Side by side, in the same run: B3 (single registrations against `--people`, no bulk import) from a
   checkout of `--baseline` (a commit from before personal data was sealed: the same service storing it
   in clear), then from this checkout. The baseline is checked out into a temporary git worktree and run
   with this virtualenv; the two runs alternate `--rounds` times so the machine's load falls on both.
2. A rotation: `--rotate` people loaded sealed into a scratch database, `keys rotate`'s job run here, timed,
   and checked afterwards: every row on the new version, the old version deleted.

Prints the machine, each run's p50/p95/p99 and their ratios, and the rotation's time and rows/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.b3_dedup import populate
from benchmarks.common import ROOT, admin_execute, libpq, machine, scratch_database

LATENCY = re.compile(r"p50 ([\d.]+) ms, p95 ([\d.]+) ms, p99 ([\d.]+) ms")


def b3(checkout: Path, people: int, singles: int, registry: str) -> tuple[float, float, float]:
    """One B3 run from `checkout` on a copy of database `registry` (loaded on first use): (p50, p95, p99)
    of single registrations."""
    env = os.environ | {"PYTHONPATH": str(checkout)}
    command = [sys.executable, str(checkout / "benchmarks" / "b3_dedup.py"), "--people", str(people),
               "--singles", str(singles), "--bulk", "0", "--reuse-db", registry]  # fmt: skip
    out = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True, check=True).stdout
    found = LATENCY.search(out)
    if found is None:
        raise SystemExit(f"no latency line in B3's output:\n{out}")
    cpu = next((line.strip() for line in out.splitlines() if "CPU per request" in line), "")
    print("   ", found.group(0), "|", cpu, flush=True)
    p50, p95, p99 = (float(v) for v in found.groups())
    return p50, p95, p99


def side_by_side(baseline: str, people: int, singles: int, rounds: int, keep: bool) -> None:
    """The rounds alternate on two loaded registries (one per schema), each run on a fresh copy."""
    with tempfile.TemporaryDirectory(prefix="cbi-b6-") as tmp:
        worktree = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(worktree), baseline], check=True,
                       capture_output=True)  # fmt: skip
        try:
            runs: dict[str, list[tuple[float, float, float]]] = {"clear": [], "sealed": []}
            registries = {"clear": f"cbi_b6_clear_{people}", "sealed": f"cbi_b6_sealed_{people}"}
            for n in range(rounds):
                print(f"round {n + 1}: baseline {baseline} (personal data in clear)", flush=True)
                runs["clear"].append(b3(worktree, people, singles, registries["clear"]))
                print(f"round {n + 1}: this checkout (personal data sealed)", flush=True)
                runs["sealed"].append(b3(ROOT, people, singles, registries["sealed"]))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(worktree)], check=False)
            if not keep:
                admin_url = libpq(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
                for name in registries.values():
                    asyncio.run(admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    best = {name: [min(r[i] for r in values) for i in range(3)] for name, values in runs.items()}
    clear, sealed = best["clear"], best["sealed"]
    print(
        f"single registration against {people:,} (best of {rounds}): in clear p50 {clear[0]:.1f} / p95 {clear[1]:.1f}"
        f" / p99 {clear[2]:.1f} ms; sealed p50 {sealed[0]:.1f} / p95 {sealed[1]:.1f} / p99 {sealed[2]:.1f} ms;"
        f" sealed/clear p95 {sealed[1] / clear[1]:.2f}, p99 {sealed[2] / clear[2]:.2f}"
        "  (targets: p95 <= 50 ms and <= 1.15x)"
    )


async def rotation(people: int) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from cbi_service.jobs.worker import load_handlers
    from cbi_service.keys import service as keys
    from cbi_service.kit import crypto
    from cbi_service.kit.db import make_session_factory
    from cbi_service.kit.settings import to_asyncpg_url

    admin_url = libpq(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    load_handlers()
    args = argparse.Namespace(people=people, seed=6)
    async with scratch_database(admin_url, f"cbi_b6_{uuid.uuid4().hex[:8]}") as db_url:
        await populate(db_url, args)
        engine = create_async_engine(to_asyncpg_url(db_url), pool_size=4)
        sessions = make_session_factory(engine)
        try:
            async with sessions.begin() as session:
                rotation = await keys.start_rotation(session, None)
            started = time.perf_counter()
            await keys.run_rotation(sessions, rotation.id, lambda: None)
            elapsed = time.perf_counter() - started
            async with sessions() as session:
                left = (
                    await session.execute(
                        text("SELECT count(*) FROM beneficiaries WHERE key_version <> :v"), {"v": rotation.to_version}
                    )
                ).scalar_one()
                versions = await crypto.versions_in_use(session)
        finally:
            await engine.dispose()
    records = [v for v, purpose, _ in versions if purpose == "records"]
    print(
        f"rotation of {rotation.total:,} sealed rows: {elapsed:.0f} s ({rotation.total / elapsed:,.0f} rows/s,"
        f" of which {keys.RETIRE_AFTER.total_seconds():.0f} s waiting for every process to see the new version);"
        f" rows left on an old version: {left}; records versions stored: {records}"
        f" (target <= 15 min at 1,000,000; load average {os.getloadavg()[0]:.1f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", help="a commit storing personal data in clear (skip the comparison if unset)")
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--singles", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the two loaded registries for another run")
    parser.add_argument("--rotate", type=int, default=1_000_000, help="people to rotate (0: no rotation)")
    args = parser.parse_args()
    print(machine(), flush=True)
    if args.baseline:
        side_by_side(args.baseline, args.people, args.singles, args.rounds, args.keep)
    if args.rotate:
        asyncio.run(rotation(args.rotate))


if __name__ == "__main__":
    main()
