"""B9 5W: `GET /v1/reports/5w` for a month in which 100,000 people were issued (target: ≤ 10 s).

The service (`cbi-service serve`, worker off) runs as its own OS process on a fresh database of the
PostgreSQL server in DATABASE_URL. Two programmes are created through the API with their reporting
identity (multipurpose cash on prepaid cards, food vouchers) and November's COP rate is recorded through
`POST /v1/fx-rates`. People (sealed as registration seals them) and their entitlements are loaded with COPY:
spread over 10 admin1 × 5 admin2, the four sexes, every age and the five population groups; every one of
them is issued a card in November, a fifth of them twice, three in five were first issued earlier in the
year (so not new), and three in ten also got a voucher in November. The figure is the wall time of the
whole request, JSON, CSV and XLSX in turn (`--rounds` each, the median printed), with the report's own
totals checked against what was loaded.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python benchmarks/b9_5w.py [--people N]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    SEALED_COLUMNS,
    bench_keyring,
    free_port,
    libpq,
    machine,
    new_api_key,
    ok,
    scratch_database,
    sealed_values,
    start_service,
    stop_processes,
    wait_http,
)
from cbi_service.auth.roles import Role  # noqa: E402
from cbi_service.beneficiaries.personal import Personal  # noqa: E402
from cbi_service.dedup.normalize import build_record  # noqa: E402
from cbi_service.kit.ids import new_id  # noqa: E402

MONTH = "2026-11"
TARGET_SECONDS = 10.0
RATE = "0.00025137"
ADMIN1 = [f"Departamento {n}" for n in range(10)]
ADMIN2 = [f"Municipio {n}" for n in range(5)]
SEXES = ("female", "male", "other", "unknown")
POPULATION_TYPES = ("in_destination", "in_transit", "pendular", "returnee", "host_community")
PEOPLE_COLUMNS = (
    "id", "status", "sex", "nationality", "location_country", "location_admin1", "location_admin2",
    "population_type", "household_size", "consent_date", "consent_purpose", "registered_by", *SEALED_COLUMNS,
)  # fmt: skip
ENTITLEMENT_COLUMNS = (
    "id", "batch_id", "programme_id", "beneficiary_id", "cycle", "currency", "amount_minor", "status", "issued_at",
)  # fmt: skip
# Programmes name a provider; nothing is sent to it (the worker is off and the entitlements are loaded issued).
PROVIDERS = json.dumps({
    "bench-cards": {"adapter": "prepaid_card", "base_url": "http://127.0.0.1:9"},
    "bench-vouchers": {"adapter": "voucher", "base_url": "http://127.0.0.1:9"},
})  # fmt: skip
BATCH = """
    INSERT INTO payment_batches (id, programme_id, name, cycle, currency, status, amount_minor, total_minor,
                                 beneficiary_count, created_by)
    VALUES ($1, $2, $3, $3, 'COP', 'completed', $4::bigint, $4::bigint * $5::int, $5::int, $6)
"""


def identity(name: str, mechanism: str, sector: str, provider: str, **reporting: object) -> dict[str, object]:
    return {
        "name": name, "country": "CO", "currency": "COP", "sector": sector, "delivery_mechanism": mechanism,
        "provider": provider, "appealing_organisation": "Alianza Humanitaria", "rmrp_activity": True, **reporting,
    }  # fmt: skip


async def seed(db_url: str, card: uuid.UUID, voucher: uuid.UUID, people: int) -> dict[str, int]:
    """People and entitlements by COPY; returns what the report must find."""
    ring = await bench_keyring(db_url)
    registrar = uuid.UUID(int=1)
    conn = await asyncpg.connect(db_url)
    try:
        persons = []
        for i in range(people):
            ident = new_id()
            born = date(1940, 1, 1) + timedelta(days=(i * 7919) % 31000)
            given = f"Persona {i}"
            record = build_record(given_names=given, family_names="Prueba", date_of_birth=born)
            personal = Personal(given, "Prueba", born, None, None, [], disability=i % 11 == 0)
            persons.append(
                (ident, "active", SEXES[i % 4], "VE", "CO", ADMIN1[i % 10], ADMIN2[(i // 10) % 5],
                 POPULATION_TYPES[(i // 3) % 5], 1 + i % 6, date(2026, 1, 2), "assistance", registrar,
                 *sealed_values(ring, ident, personal, record))
            )  # fmt: skip
        for start in range(0, people, 20_000):
            await conn.copy_records_to_table(
                "beneficiaries", records=persons[start : start + 20_000], columns=PEOPLE_COLUMNS
            )
        ids = [p[0] for p in persons]
        for programme, chosen in ((card, ids), (voucher, ids[::10] + ids[3::10] + ids[7::10])):
            await conn.execute(
                "INSERT INTO enrolments (id, programme_id, beneficiary_id, enrolled_by)"
                " SELECT cbi_uuid7(), $1, unnest($2::uuid[]), $3",
                programme,
                chosen,
                registrar,
            )

        def at(day: int, month: int) -> datetime:
            return datetime(2026, month, day, 12, tzinfo=UTC)

        cycles = [
            (card, "2026-11-a", ids, 250_000_00, at(5, 11)),
            (card, "2026-11-b", ids[::5], 250_000_00, at(20, 11)),
            (voucher, "2026-11", ids[::10] + ids[3::10] + ids[7::10], 80_000_00, at(12, 11)),
        ]
        earlier = [p for n, p in enumerate(ids) if n % 5 < 3]  # three in five: not new in November
        for month in (3, 6, 9):
            cycles.append((card, f"2026-{month:02d}", earlier, 250_000_00, at(10, month)))
        for programme, cycle, chosen, amount, issued_at in cycles:
            batch = new_id()
            await conn.execute(BATCH, batch, programme, cycle, amount, len(chosen), registrar)
            rows = [(new_id(), batch, programme, p, cycle, "COP", amount, "issued", issued_at) for p in chosen]
            for start in range(0, len(rows), 50_000):
                await conn.copy_records_to_table(
                    "entitlements", records=rows[start : start + 50_000], columns=ENTITLEMENT_COLUMNS
                )
        await conn.execute("ANALYZE")
        entitlements = await conn.fetchval("SELECT count(*) FROM entitlements")
    finally:
        await conn.close()
    voucher_people = len(ids[::10] + ids[3::10] + ids[7::10])
    return {
        "card_total": people,
        "card_new": people - len(earlier),
        "voucher_total": voucher_people,
        "entitlements": entitlements,
        # 250,000.00 COP a card load, 80,000.00 a voucher
        "paid_minor": 250_000_00 * (people + len(ids[::5])) + 80_000_00 * voucher_people,
    }


async def timed(http: httpx.AsyncClient, headers: dict[str, str], fmt: str, rounds: int) -> tuple[float, bytes]:
    seconds = []
    body = b""
    for _ in range(rounds):
        started = time.perf_counter()
        response = await http.get("/v1/reports/5w", params={"month": MONTH, "format": fmt}, headers=headers)
        seconds.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise RuntimeError(f"{fmt}: {response.status_code} {response.text[:500]}")
        body = response.content
    return statistics.median(seconds), body


async def run(people: int, rounds: int, server_url: str) -> None:
    async with scratch_database(libpq(server_url, "postgres"), f"cbi_b9_{uuid.uuid4().hex[:8]}") as db_url:
        port = free_port()
        env = {**os.environ, "DATABASE_URL": db_url, "CBI_LOG_LEVEL": "WARNING", "CBI_PROVIDERS": PROVIDERS}
        service = start_service(port, env)
        try:
            await wait_http(f"http://127.0.0.1:{port}/healthz")
            keys = {}
            for name, role in (("admin", Role.admin), ("finance", Role.finance), ("officer", Role.programme_officer)):
                _, raw = await new_api_key(db_url, f"bench {name}", role)
                keys[name] = {"Authorization": f"Bearer {raw}"}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
                card_body = identity(
                    "B9 cards", "prepaid_card", "multipurpose_cash", "bench-cards",
                    indicator="Number of people receiving multipurpose cash assistance", activity_name="MPC",
                    implementing_partner="Fundación Frontera Viva",
                )  # fmt: skip
                voucher_body = identity(
                    "B9 vouchers", "voucher", "food_security", "bench-vouchers",
                    indicator="Number of people receiving food vouchers", activity_name="Bonos",
                )  # fmt: skip
                card = (await ok(await http.post("/v1/programmes", headers=keys["admin"], json=card_body)))["id"]
                voucher = (await ok(await http.post("/v1/programmes", headers=keys["admin"], json=voucher_body)))["id"]
                rate = {"currency": "COP", "month": MONTH, "usd_per_unit": RATE, "source": "bench"}
                await ok(await http.post("/v1/fx-rates", headers=keys["finance"], json=rate))
                started = time.perf_counter()
                loaded = await seed(db_url, uuid.UUID(card), uuid.UUID(voucher), people)
                seeded = time.perf_counter() - started
                figures = {fmt: await timed(http, keys["officer"], fmt, rounds) for fmt in ("json", "csv", "xlsx")}
        finally:
            stop_processes([service], 30)
    report = json.loads(figures["json"][1])
    card_rows = [r for r in report["rows"] if r["Delivery mechanism"] == "Prepaid Card"]
    voucher_rows = [r for r in report["rows"] if r["Delivery mechanism"] == "Voucher"]
    totals: dict[str, int] = {
        "card_total": sum(r["Total monthly beneficiaries"] for r in card_rows),
        "card_new": sum(r["New beneficiaries of the month"] for r in card_rows),
        "voucher_total": sum(r["Total monthly beneficiaries"] for r in voucher_rows),
    }
    lines = list(csv.reader(io.StringIO(figures["csv"][1].decode())))
    print(f"B9 5W — GET /v1/reports/5w for a month with {people:,} people issued (target ≤ 10 s at 100,000)")
    print(f"  machine: {machine()}")
    print(f"  load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1, 5, 15 min)")
    print(
        f"  data: {people:,} people issued in {MONTH} ({loaded['entitlements']:,} entitlements since January);"
        f" seeded in {seeded:.0f} s (not timed)"
    )
    passes = report["passes_quality_rules"]
    print(f"  report: {len(report['rows'])} rows, {len(lines) - 1} CSV rows, passes R4V's rules: {passes}")
    value = sum(Decimal(r["Value (in USD)"]) for r in report["rows"])
    exact = Decimal(loaded["paid_minor"]).scaleb(-2) * Decimal(RATE)
    totals["value within a cent a row"] = int(abs(value - exact) <= Decimal("0.005") * len(report["rows"]))
    expected = {"card_total": people, "card_new": loaded["card_new"], "voucher_total": loaded["voucher_total"]}
    expected["value within a cent a row"] = 1
    for name, count in expected.items():
        status = "ok" if totals[name] == count else f"MISMATCH (expected {count:,})"
        print(f"  {name}: {totals[name]:,} {status}")
    print(f"  value: {value} USD for {exact} exactly")
    for fmt, (seconds, body) in figures.items():
        verdict = "within" if seconds <= TARGET_SECONDS else "OVER"
        print(f"  {fmt}: {seconds:.2f} s median of {rounds} ({len(body) / 1024:.0f} KiB); {verdict} the 10 s target")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server_url = os.environ.get("DATABASE_URL")
    if not server_url:
        raise SystemExit("set DATABASE_URL to a PostgreSQL server the benchmark may create a database on")
    asyncio.run(run(args.people, args.rounds, server_url))


if __name__ == "__main__":
    main()
