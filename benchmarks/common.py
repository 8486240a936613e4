"""What the benchmarks share: the machine they ran on, a scratch database migrated like production, the
service as its own OS process, and what its processes use (resident memory, CPU).

The scripts put the repository root on `sys.path` before importing this, so each still runs as
`python benchmarks/bN_name.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import psutil
from sqlalchemy.ext.asyncio import create_async_engine

from cbi_service.auth.roles import Role
from cbi_service.auth.service import create_api_key
from cbi_service.beneficiaries.personal import Personal, sealed_columns
from cbi_service.dedup.normalize import MatchRecord, build_record
from cbi_service.kit.crypto import Keyring, load_keyring, master_key, new_master_key
from cbi_service.kit.db import make_session_factory
from cbi_service.kit.ids import new_id
from cbi_service.kit.settings import get_settings, to_asyncpg_url
from cbi_service.migrate import upgrade

ROOT = Path(__file__).resolve().parents[1]


def cpu_model(default: str = "unknown") -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows, else `default`."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or default


def machine() -> str:
    """One line saying what the figures were measured on; the machine may be shared, so they are indicative."""
    memory = psutil.virtual_memory().total / 2**30
    return (
        f"{cpu_model(platform.machine())}; {psutil.cpu_count()} logical cores; {memory:.0f} GiB RAM; "
        f"Python {platform.python_version()}; {platform.system()} {platform.release()}; "
        "machine shared with other work: figures are indicative"
    )


def libpq(url: str, database: str | None = None) -> str:
    """`url` as asyncpg and libpq spell it (`postgresql://`), on `database` when given."""
    parts = urlsplit(url)
    path = f"/{database}" if database else parts.path
    return urlunsplit(("postgresql", parts.netloc, path, parts.query, parts.fragment))


async def admin_execute(url: str, statement: str) -> None:
    """One statement on its own connection (CREATE/DROP DATABASE cannot run inside a transaction)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def scratch_database(admin_url: str, name: str, template: str | None = None) -> AsyncIterator[str]:
    """A new database `name` on the server of `admin_url` (a copy of `template` if given), brought to the
    latest migration; yields its URL and drops it afterwards, whatever happened."""
    copy = f' TEMPLATE "{template}"' if template else ""
    await admin_execute(admin_url, f'CREATE DATABASE "{name}"{copy}')
    try:
        url = libpq(admin_url, name)
        await asyncio.to_thread(upgrade, url)
        yield url
    finally:
        await admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def new_api_key(
    db_url: str, name: str, role: Role, *, merchant_id: uuid.UUID | None = None
) -> tuple[uuid.UUID, str]:
    """An API key with one role (a merchant's, bound to `merchant_id`), made straight in the database: (its id,
    the raw key)."""
    engine = create_async_engine(to_asyncpg_url(db_url))
    try:
        async with make_session_factory(engine).begin() as session:
            key, raw = await create_api_key(session, name, [role], merchant_id=merchant_id)
    finally:
        await engine.dispose()
    return key.id, raw


STAFF_ROLES = {
    "admin": Role.admin,
    "officer": Role.programme_officer,
    "approver-a": Role.approver,
    "approver-b": Role.approver,
    "finance": Role.finance,
}
"""The people a payment cycle needs: two distinct approvers and a finance officer who releases."""


async def staff_headers(db_url: str) -> dict[str, dict[str, str]]:
    """An API key per `STAFF_ROLES` entry, as ready-made Authorization headers by name."""
    headers = {}
    for name, role in STAFF_ROLES.items():
        _, raw = await new_api_key(db_url, f"bench {name}", role)
        headers[name] = {"Authorization": f"Bearer {raw}"}
    return headers


async def ok(response: httpx.Response) -> Any:
    """The JSON body of a successful response; a failed one stops the benchmark with what the API said."""
    if response.status_code >= 400:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text}"
        )
    return response.json()


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a live process so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_http(url: str, timeout: float = 60) -> None:
    """Until `url` answers 200; a service process takes a moment to listen."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while True:
            try:
                if (await http.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer")
            await asyncio.sleep(0.1)


def start_worker(env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """`cbi-service worker` as its own OS process, quiet on stderr."""
    return subprocess.Popen(
        [sys.executable, "-m", "cbi_service", "worker"], cwd=ROOT, env=dict(env), stderr=subprocess.DEVNULL
    )


def start_service(port: int, env: Mapping[str, str], root: Path = ROOT) -> subprocess.Popen[bytes]:
    """`cbi-service serve` on 127.0.0.1:`port` with the worker off, as its own OS process, quiet on stderr;
    the code is the checkout at `root` (this one unless a benchmark compares with another), with no provider
    simulated unless `env` configures its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "cbi_service", "serve", "--port", str(port)],
        cwd=root,
        env={"CBI_PROVIDERS": "{}", **env, "CBI_RUN_WORKER": "false"},
        stderr=subprocess.DEVNULL,
    )


def stop_processes(processes: Iterable[subprocess.Popen[bytes]], timeout: float) -> None:
    """Ask every process to stop, then kill any that has not within `timeout` seconds."""
    processes = list(processes)
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()


class PeakMemory(threading.Thread):
    """Samples the resident set size of a process (with `tree`, summed over it and its descendants) every
    `interval` seconds, keeping the peak, until `running` is set false or the process is gone."""

    def __init__(self, pid: int, interval: float, *, tree: bool) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.interval = interval
        self.tree = tree
        self.peak = 0
        self.running = True

    def run(self) -> None:
        while self.running:
            try:
                processes = [self.process, *self.process.children(recursive=True)] if self.tree else [self.process]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in processes))
            except psutil.Error:
                return
            time.sleep(self.interval)


# The benchmark and every service process it starts seal and open personal data under one master key.
os.environ.setdefault("CBI_MASTER_KEY", new_master_key())
SEALED_COLUMNS = ("key_version", "data_key", "personal", "profile", "external_ref_index", "birth_year")
SEED_COLUMNS = (
    "id", "status", "sex", "nationality", "location_country", "household_size", "consent_date", "consent_purpose",
    "registered_by", *SEALED_COLUMNS,
)  # fmt: skip


async def bench_keyring(url: str) -> Keyring:
    """The database's keys (created on first use), as the service will load them."""
    engine = create_async_engine(to_asyncpg_url(url))
    try:
        return await load_keyring(engine, master_key(get_settings()))
    finally:
        await engine.dispose()


def sealed_values(ring: Keyring, ident: uuid.UUID, personal: Personal, record: MatchRecord) -> tuple[Any, ...]:
    """A person's sealed columns in `SEALED_COLUMNS` order, as registration stores them."""
    columns = sealed_columns(ring, ring.active_version, ident, personal, record)
    return tuple(columns[name] for name in SEALED_COLUMNS)


async def seed_people(url: str, conn: asyncpg.Connection, registrar: uuid.UUID, count: int) -> None:
    """Active people for the disbursement benchmarks (no dedup work to measure), sealed as registered."""
    ring = await bench_keyring(url)
    rows = []
    for i in range(count):
        ident = new_id()
        born = date(1980, 1, 1) + timedelta(days=i % 9000)
        record = build_record(given_names=f"Persona {i}", family_names="Prueba", date_of_birth=born)
        personal = Personal(f"Persona {i}", "Prueba", born, None, None, [])
        rows.append((ident, "active", "female", "VE", "CO", 1 + i % 6, date(2026, 11, 1), "assistance", registrar,
                     *sealed_values(ring, ident, personal, record)))  # fmt: skip
    for start in range(0, len(rows), 20_000):
        await conn.copy_records_to_table("beneficiaries", records=rows[start : start + 20_000], columns=SEED_COLUMNS)


ENROL = """
    INSERT INTO enrolments (id, programme_id, beneficiary_id, enrolled_by)
    SELECT cbi_uuid7(), $1, id, $2 FROM beneficiaries
"""


# --- load generator: keep-alive HTTP/1.1 over asyncio streams (httpx costs more CPU than the server) ---


@dataclass
class Load:
    """Latencies (s) and status counts of one phase."""

    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")

    def add(self, other: Load) -> None:
        self.latencies += other.latencies
        self.elapsed += other.elapsed
        for status, n in other.statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + n

    def summary(self) -> str:
        statuses = ", ".join(f"{status}: {n}" for status, n in sorted(self.statuses.items()))
        return (
            f"{len(self.latencies)} requests in {self.elapsed:.1f} s = {self.rate:,.0f}/s, "
            f"p50 {self.ms(0.5):.1f} ms, p99 {self.ms(0.99):.1f} ms ({statuses})"
        )


class _Connection:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:`port`. The server closes one left idle past its
    keep-alive timeout (a paced phase at a low rate); a request that meets such a closed connection, before
    any byte of an answer, was never read, and is sent again on a new one."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def exchange(self, request: bytes) -> int:
        """Send `request`, read the whole answer; its status."""
        for attempt in range(2):
            if self.reader is None or self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            try:
                return await self._exchange(self.reader, self.writer, request)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                self.close()
                unread = isinstance(exc, ConnectionError) or not exc.partial
                if attempt or not unread:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length:
            await reader.readexactly(length)
        return int(head[9:12])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def closed_loop(ports: Sequence[int], requests: Sequence[bytes], connections: int, max_seconds: float) -> Load:
    """Each connection (spread over the service processes listening on `ports`) sends its next request as soon
    as the previous answer arrives."""
    load = Load()
    position = 0
    deadline = time.perf_counter() + max_seconds

    async def client(port: int) -> None:
        nonlocal position
        connection = _Connection(port)
        try:
            while position < len(requests) and time.perf_counter() < deadline:
                request = requests[position]
                position += 1
                sent = time.perf_counter()
                status = await connection.exchange(request)
                load.latencies.append(time.perf_counter() - sent)
                load.statuses[status] = load.statuses.get(status, 0) + 1
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(ports[n % len(ports)]) for n in range(connections)))
    load.elapsed = time.perf_counter() - started
    return load


async def paced(ports: Sequence[int], requests: Sequence[bytes], rate: float, connections: int) -> Load:
    """Open loop: request i is due at start + i / rate, and its latency counts from then."""
    load = Load()
    position = 0
    start = time.perf_counter() + 0.1

    async def client(port: int) -> None:
        nonlocal position
        connection = _Connection(port)
        try:
            while position < len(requests):
                index = position
                position += 1
                due = start + index / rate
                if (delay := due - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                status = await connection.exchange(requests[index])
                load.latencies.append(time.perf_counter() - due)
                load.statuses[status] = load.statuses.get(status, 0) + 1
        finally:
            connection.close()

    await asyncio.gather(*(client(ports[n % len(ports)]) for n in range(connections)))
    load.elapsed = time.perf_counter() - start
    return load


def http_get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
