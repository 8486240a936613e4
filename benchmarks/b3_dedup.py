"""B3 speed: registration latency and bulk import time against a large registry, over real HTTP.

1. Creates a database, migrates it, and loads `--people` synthetic registered people (households generated
   as in benchmarks/datasets/spanish.py) with COPY into `beneficiaries` and `dedup_keys`, exactly as registration stores
   them (same match profile, same blocking keys), then VACUUM ANALYZE as autovacuum would have by then.
2. Starts the service (uvicorn, API + in-process worker) on 127.0.0.1 and sends `--singles` sequential
   `POST /v1/beneficiaries`: half corrupted copies of registered people (answered 409 or registered for
   adjudication), half new people. Prints p50/p95/p99 latency.
3. Uploads a `--bulk`-row CSV (same mix) to `POST /v1/beneficiaries/imports` and times it until `completed`.
4. Prints the peak resident memory (VmHWM) of the service and of the process it validates import rows in,
   and for steps 2 and 3 the CPU time the service (with that process) and the database used, with the load
   average: the machine may be shared, and wall times with it.

Targets at 1,000,000 people: p95 <= 50 ms, p99 <= 100 ms, 100,000-row import <= 180 s.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/b3_dedup.py --people 1000000 --singles 2000 --bulk 100000

Loading a million people takes minutes; while iterating, `--reuse-db NAME` keeps the loaded registry in
database NAME (loaded on first use) and runs each time on a fresh copy of it.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import os
import pickle
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    SEALED_COLUMNS,
    admin_execute,
    bench_keyring,
    free_port,
    libpq,
    new_api_key,
    scratch_database,
    sealed_values,
    stop_processes,
    wait_http,
)
from benchmarks.datasets.spanish import Corruptor, Generator, Person
from cbi_service.auth.roles import Role
from cbi_service.beneficiaries.imports import TEMPLATE_COLUMNS
from cbi_service.beneficiaries.personal import Personal
from cbi_service.dedup.blocking import blocking_keys
from cbi_service.dedup.documents import FieldError, normalize_document, normalize_phone
from cbi_service.dedup.normalize import DocumentKey, MatchRecord, build_record
from cbi_service.kit.ids import new_id
from cbi_service.migrate import upgrade

BENEFICIARY_COLUMNS = (
    "id", "status", "sex", "nationality", "location_country", "household_size", "consent_date", "consent_purpose",
    "registered_by", *SEALED_COLUMNS,
)  # fmt: skip
COPY_BATCH = 20_000


def to_record(person: Person) -> MatchRecord:
    """The match record registration would store for `person`; documents and phones the API would refuse are
    left out, as a registrar would be made to fix or omit them."""
    documents: list[DocumentKey] = []
    for doc_type, number, country in person.documents:
        try:
            documents.append(DocumentKey(doc_type, country, normalize_document(doc_type, number, country)))
        except FieldError:
            continue
    phone = None
    if person.phone:
        try:
            phone = normalize_phone(person.phone, person.country, person.nationality)
        except FieldError:
            phone = None
    return build_record(
        given_names=person.given_names,
        family_names=person.family_names,
        date_of_birth=person.date_of_birth,
        sex=person.sex,
        nationality=person.nationality,
        documents=tuple(documents),
        phone=phone,
    )


def doc_json(person: Person) -> list[dict[str, str]]:
    return [{"type": t, "number": n, "issuing_country": c} for t, n, c in person.documents]


async def load_population(url: str, people: list[Person], registrar: uuid.UUID) -> float:
    started = time.perf_counter()
    ring = await bench_keyring(url)
    conn = await asyncpg.connect(url)
    try:
        for start in range(0, len(people), COPY_BATCH):
            rows: list[tuple[Any, ...]] = []
            keys: list[tuple[int, uuid.UUID]] = []
            for person in people[start : start + COPY_BATCH]:
                record = to_record(person)
                ident = new_id()
                docs = [{**d, "normalised": k.number} for d, k in zip(doc_json(person), record.documents, strict=False)]
                personal = Personal(
                    person.given_names, person.family_names, person.date_of_birth, record.phone, None, docs
                )
                rows.append((
                    ident, "active", person.sex, person.nationality, person.country, 3, date(2026, 1, 15),
                    "benchmark", registrar, *sealed_values(ring, ident, personal, record),
                ))  # fmt: skip
                keys.extend((ring.key_hash(key), ident) for key in blocking_keys(record))
            await conn.copy_records_to_table("beneficiaries", records=rows, columns=BENEFICIARY_COLUMNS)
            await conn.copy_records_to_table(
                "dedup_keys", records=list(dict.fromkeys(keys)), columns=("key", "beneficiary_id")
            )
        await conn.execute("VACUUM (ANALYZE) beneficiaries")
        await conn.execute("VACUUM (ANALYZE) dedup_keys")
    finally:
        await conn.close()
    return time.perf_counter() - started


def body_of(person: Person, ref: str) -> dict[str, Any]:
    return {
        "given_names": person.given_names,
        "family_names": person.family_names,
        "date_of_birth": person.date_of_birth.isoformat(),
        "sex": person.sex,
        "nationality": person.nationality,
        "documents": doc_json(person),
        "phone": person.phone,
        "location": {"country": person.country},
        "household_size": 3,
        "external_ref": ref,
        "consent": {"given": True, "date": "2026-11-01", "purpose": "benchmark"},
    }


def registrations(generator: Generator, corruptor: Corruptor, people: list[Person], count: int) -> list[Person]:
    """Half corrupted copies of registered people, half new people."""
    out = []
    for i in range(count):
        if i % 2 == 0:
            out.append(corruptor.corrupt(people[generator.rng.randrange(len(people))])[0])
        else:
            out.append(generator.household()[0])
    return out


def peak_rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    """Processes the service started (the import's validation process)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a local process and of its children that have ended (0 if not visible)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


async def database_cpu_seconds(admin_url: str, database: str) -> float:
    """CPU time of the server processes connected to `database`, when PostgreSQL runs on this machine."""
    conn = await asyncpg.connect(admin_url)
    try:
        pids = [r["pid"] for r in await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", database)]
    finally:
        await conn.close()
    return sum(cpu_seconds(pid) for pid in pids)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def database_exists(admin_url: str, name: str) -> bool:
    conn = await asyncpg.connect(admin_url)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


async def populate(db_url: str, args: argparse.Namespace) -> tuple[list[Person], Generator]:
    """Load the registered population into a migrated empty database."""
    loader_id, _ = await new_api_key(db_url, "b3-loader", Role.registrar)
    generator = Generator(args.seed)
    started = time.perf_counter()
    people: list[Person] = []
    while len(people) < args.people:
        people.extend(generator.household())
    generated = time.perf_counter() - started
    loaded = await load_population(db_url, people, loader_id)
    print(f"loaded {len(people)} people: generated in {generated:.0f}s, COPY + VACUUM ANALYZE in {loaded:.0f}s")
    return people, generator


async def reusable_population(admin_url: str, args: argparse.Namespace) -> tuple[list[Person], Generator]:
    """The population kept in database `--reuse-db` (loaded on first use) and the generator state after it.

    The kept database is only ever a template: each run works on a fresh copy of it, so every run starts
    from the same registry. The generated people are cached next to it to make the same corruptions.
    """
    template = args.reuse_db
    cache = Path(tempfile.gettempdir()) / f"{template}.population.pickle"
    if await database_exists(admin_url, template) and cache.exists():
        people_count, seed, people, generator = pickle.loads(cache.read_bytes())
        if (people_count, seed) != (args.people, args.seed):
            raise SystemExit(f"{template} holds --people {people_count} --seed {seed}: use another name")
        print(f"reusing database {template} with {len(people)} registered people")
        return people, generator
    await admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
    await admin_execute(admin_url, f'CREATE DATABASE "{template}"')
    await asyncio.to_thread(upgrade, libpq(admin_url, template))
    people, generator = await populate(libpq(admin_url, template), args)
    cache.write_bytes(pickle.dumps((args.people, args.seed, people, generator)))
    return people, generator


def bulk_csv(generator: Generator, corruptor: Corruptor, people: list[Person], count: int) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(TEMPLATE_COLUMNS)
    for n, person in enumerate(registrations(generator, corruptor, people, count)):
        doc = person.documents[0] if person.documents else ("", "", "")
        writer.writerow([
            person.given_names, person.family_names, person.date_of_birth.isoformat(), person.sex,
            person.nationality, doc[0], doc[1], doc[2], person.phone or "", person.country, "", "", 3,
            f"bulk-{n}", "yes", "2026-11-01", "benchmark",
        ])  # fmt: skip
    return buffer.getvalue().encode()


async def run(args: argparse.Namespace) -> None:
    admin_url = libpq(os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    database = f"cbi_b3_{uuid.uuid4().hex[:8]}"
    if args.reuse_db:
        people, generator = await reusable_population(admin_url, args)
    started = time.perf_counter()
    async with scratch_database(admin_url, database, template=args.reuse_db) as db_url:
        if args.reuse_db:
            print(f"copied {args.reuse_db} in {time.perf_counter() - started:.0f}s")
        else:
            people, generator = await populate(db_url, args)
        await measure(args, admin_url, database, db_url, people, generator)


async def measure(
    args: argparse.Namespace, admin_url: str, database: str, db_url: str, people: list[Person], generator: Generator
) -> None:
    """Steps 2 to 4 against database `database` (at `db_url`), which holds the registered population."""
    server: subprocess.Popen[bytes] | None = None
    try:
        _, raw_key = await new_api_key(db_url, "b3-registrar", Role.registrar)
        corruptor = Corruptor(random.Random(args.seed + 1))

        port = free_port()
        env = os.environ | {"DATABASE_URL": db_url, "CBI_LOG_LEVEL": "WARNING", "CBI_RUN_WORKER": "true"}
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "cbi_service.app:create_app", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning", "--no-access-log"],
            env=env,
        )  # fmt: skip
        print(f"service pid {server.pid}")
        await wait_http(f"http://127.0.0.1:{port}/healthz")
        headers = {"Authorization": f"Bearer {raw_key}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as http:
            singles = registrations(generator, corruptor, people, args.singles + 20)
            for person in singles[:20]:  # warm up connections and caches
                await http.post("/v1/beneficiaries", json=body_of(person, "warm"))
            latencies: list[float] = []
            statuses: dict[int, int] = {}
            cpu0 = cpu_seconds(server.pid), await database_cpu_seconds(admin_url, database)
            for n, person in enumerate(singles[20:]):
                t0 = time.perf_counter()
                response = await http.post("/v1/beneficiaries", json=body_of(person, f"single-{n}"))
                latencies.append((time.perf_counter() - t0) * 1000)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            cpu1 = cpu_seconds(server.pid), await database_cpu_seconds(admin_url, database)
            if latencies:
                print(
                    f"single registration over HTTP ({len(latencies)} requests, statuses {statuses}): "
                    f"p50 {percentile(latencies, 0.5):.1f} ms, p95 {percentile(latencies, 0.95):.1f} ms, "
                    f"p99 {percentile(latencies, 0.99):.1f} ms  (targets p95 <= 50, p99 <= 100)\n"
                    f"  CPU per request: service {(cpu1[0] - cpu0[0]) / len(latencies) * 1000:.1f} ms, database "
                    f"{(cpu1[1] - cpu0[1]) / len(latencies) * 1000:.1f} ms (load average {os.getloadavg()[0]:.1f})"
                )

            if args.bulk:
                payload = bulk_csv(generator, corruptor, people, args.bulk)
                cpu0 = cpu_seconds(server.pid), await database_cpu_seconds(admin_url, database)
                t0 = time.perf_counter()
                files = {"file": ("bulk.csv", payload, "text/csv")}
                accepted = await http.post("/v1/beneficiaries/imports", files=files)
                accepted.raise_for_status()
                import_id = accepted.json()["id"]
                helper_peak = 0.0
                while True:
                    await asyncio.sleep(0.5)
                    helper_peak = max([helper_peak, *(peak_rss_mib(child) for child in children(server.pid))])
                    report = (await http.get(f"/v1/beneficiaries/imports/{import_id}", params={"limit": 1})).json()
                    if report["status"] in {"completed", "failed"}:
                        break
                elapsed = time.perf_counter() - t0
                cpu1 = cpu_seconds(server.pid), await database_cpu_seconds(admin_url, database)
                print(
                    f"bulk import of {args.bulk} rows ({len(payload) / 2**20:.1f} MiB): {report['status']} in "
                    f"{elapsed:.1f}s, counts {report['counts']}  (target <= 180 s at 100,000 rows)\n"
                    f"  CPU used meanwhile: service {cpu1[0] - cpu0[0]:.1f}s, database {cpu1[1] - cpu0[1]:.1f}s"
                    f" (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
                )
        print(
            f"service peak resident memory: {peak_rss_mib(server.pid):.0f} MiB"
            + (f", plus {helper_peak:.0f} MiB in the import's validation process" if args.bulk else "")
        )
    finally:
        if server is not None:
            stop_processes([server], 30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--singles", type=int, default=2000)
    parser.add_argument("--bulk", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument(
        "--reuse-db",
        metavar="NAME",
        help="keep the loaded registry in database NAME (loaded on first use) and run on a copy of it",
    )
    args = parser.parse_args()
    print(f"machine: {platform.machine()} cpus={os.cpu_count()} python={platform.python_version()}")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
