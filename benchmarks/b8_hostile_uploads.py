"""B8: resident memory of `serve` while hostile uploads are refused.

`cbi-service serve` (with its in-process worker) runs as its own OS process on a fresh database of the
PostgreSQL server in DATABASE_URL; this process, on 127.0.0.1 only, sends it, one after the other:

1. a 400 MB JSON body with a valid key, declared with Content-Length;
2. the same, chunked (no length declared: counted as it streams in);
3. a 300 MB body with no Authorization header;
4. an XLSX bomb: a workbook of about 1 MB whose shared strings hold one string of about 1 GB, uploaded
   as a beneficiary import; the import job is followed until it ends (or `--xlsx-seconds` pass).

For each: the answer, the bytes the server took before answering, and the peak resident memory of the
service (its process and any children, sampled every 50 ms) against the 300 MB target, with the memory
at rest beforehand.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres python benchmarks/b8_hostile_uploads.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
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
    stop_processes,
    wait_http,
)
from cbi_service.auth.roles import Role  # noqa: E402

TARGET_MB = 300
MB = 1 << 20
CHUNK = b"a" * MB


@dataclass
class Case:
    name: str
    answer: str
    sent_mb: float
    peak_mb: float


def tree_rss(pid: int) -> int:
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])


def write_xlsx_bomb(path: Path, string_mb: int) -> None:
    """A minimal workbook whose one shared string is `string_mb` MiB of one letter, deflated as it is
    written (the file is about a thousandth of that)."""
    parts = {
        "[Content_Types].xml": (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
            '<Override PartName="/xl/sharedStrings.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/>'
            "</Types>"
        ),
        "_rels/.rels": (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Target="xl/workbook.xml" '
            'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument"/>'
            "</Relationships>"
        ),
        "xl/workbook.xml": (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" '
            'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships">'
            '<sheets><sheet name="people" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ),
        "xl/_rels/workbook.xml.rels": (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Target="worksheets/sheet1.xml" '
            'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet"/>'
            '<Relationship Id="rId2" Target="sharedStrings.xml" '
            'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings"/>'
            "</Relationships>"
        ),
        "xl/worksheets/sheet1.xml": (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
            '<row r="1"><c r="A1" t="inlineStr"><is><t>given_names</t></is></c></row>'
            '<row r="2"><c r="A2" t="s"><v>0</v></c></row>'
            "</sheetData></worksheet>"
        ),
    }
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as xlsx:
        for name, text in parts.items():
            xlsx.writestr(name, text)
        with xlsx.open("xl/sharedStrings.xml", "w", force_zip64=True) as strings:
            strings.write(
                b'<?xml version="1.0" encoding="UTF-8"?>'
                b'<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="1" uniqueCount="1">'
                b"<si><t>"
            )
            for _ in range(string_mb):
                strings.write(CHUNK)
            strings.write(b"</t></si></sst>")


async def send_large_body(port: int, path: str, headers: dict[str, str], size_mb: int, *, declare: bool) -> Case:
    """Stream `size_mb` MiB to `path` on a raw connection, stopping when the server answers or hangs up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {size_mb * MB}" if declare else "Transfer-Encoding: chunked")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    sent = 0
    answer = asyncio.create_task(reader.readline())
    try:
        while sent < size_mb * MB and not answer.done():
            writer.write(CHUNK if declare else b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
            await writer.drain()
            sent += len(CHUNK)
        if not declare and not answer.done():
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    try:
        status_line = (await asyncio.wait_for(answer, 60)).decode(errors="replace").strip()
    except (TimeoutError, ConnectionError):
        status_line = "no answer"
    with contextlib.suppress(ConnectionError, OSError):
        writer.close()
        await writer.wait_closed()
    return Case("", status_line.removeprefix("HTTP/1.1 ") or "connection closed", sent / MB, 0)


async def xlsx_bomb(port: int, headers: dict[str, str], string_mb: int, seconds: float, pid: int) -> Case:
    with tempfile.TemporaryDirectory(prefix="cbi-b8-") as tmp:
        path = Path(tmp) / "bomb.xlsx"
        await asyncio.to_thread(write_xlsx_bomb, path, string_mb)
        size_mb = path.stat().st_size / MB
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120) as http:
            files = {"file": ("people.xlsx", path.read_bytes(), "application/octet-stream")}
            response = await http.post("/v1/beneficiaries/imports", files=files)
            answer = f"{response.status_code}"
            if response.status_code == 202:
                import_id = response.json()["id"]
                deadline = time.monotonic() + seconds
                status = "queued"
                while time.monotonic() < deadline and status not in {"completed", "failed"}:
                    await asyncio.sleep(0.5)
                    with contextlib.suppress(httpx.TransportError):
                        report = (await http.get(f"/v1/beneficiaries/imports/{import_id}", params={"limit": 1})).json()
                        status = f"{report['status']}" + (f" ({report['error']})" if report.get("error") else "")
                    if tree_rss(pid) > 4 << 30:
                        status += ", stopped watching past 4 GB"
                        break
                answer += f", import {status}"
            else:
                answer += f" {response.json().get('detail', '')}"
    return Case("", answer, size_mb, 0)


async def measure(db_url: str, args: argparse.Namespace) -> None:
    _, raw_key = await new_api_key(db_url, "bench b8", Role.registrar)
    key = {"Authorization": f"Bearer {raw_key}"}
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "CBI_LOG_LEVEL": "WARNING",
        "CBI_LOG_FORMAT": "json",
        "CBI_RUN_WORKER": "true",
        "CBI_PROVIDERS": "{}",  # no simulator processes in the memory measured
    }
    service = subprocess.Popen(
        [sys.executable, "-m", "cbi_service", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        await wait_http(f"http://127.0.0.1:{port}/readyz")
        await asyncio.sleep(1)
        rest_mb = tree_rss(service.pid) / MB
        print("B8 hostile uploads")
        print(f"  machine: {machine()}")
        print(f"  serve at rest: {rest_mb:.0f} MB resident (process and children); target: peak < {TARGET_MB} MB")
        cases = [
            ("400 MB JSON, Content-Length", send_large_body(port, "/v1/beneficiaries", key, 400, declare=True)),
            ("400 MB JSON, chunked", send_large_body(port, "/v1/beneficiaries", key, 400, declare=False)),
            ("300 MB, no Authorization", send_large_body(port, "/v1/beneficiaries", {}, 300, declare=True)),
            (
                f"XLSX bomb ({args.xlsx_string_mb} MB string)",
                xlsx_bomb(port, key, args.xlsx_string_mb, args.xlsx_seconds, service.pid),
            ),
        ]
        for name, run_case in cases:
            sampler = PeakMemory(service.pid, 0.05, tree=True)
            sampler.start()
            case = await run_case
            await asyncio.sleep(0.5)
            sampler.running = False
            sampler.join()
            verdict = "under" if sampler.peak / MB < TARGET_MB else "OVER"
            print(
                f"  {name:34} answer: {case.answer:40} sent {case.sent_mb:7.1f} MB  "
                f"peak {sampler.peak / MB:6.0f} MB ({verdict} {TARGET_MB} MB)"
            )
    finally:
        stop_processes([service], 30)


async def run(args: argparse.Namespace, server_url: str) -> None:
    async with scratch_database(libpq(server_url, "postgres"), f"cbi_b8_{uuid.uuid4().hex[:8]}") as db_url:
        await measure(db_url, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--xlsx-string-mb", type=int, default=1024, help="size of the bomb's one shared string")
    parser.add_argument("--xlsx-seconds", type=float, default=90, help="how long to follow the bomb's import")
    args = parser.parse_args()
    server_url = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    asyncio.run(run(args, server_url))


if __name__ == "__main__":
    main()
