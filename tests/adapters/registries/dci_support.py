"""The DCI registry simulator in its own process, a registry that never answers, a recording proxy, and the
published DCI schemas as validators."""

from __future__ import annotations

import csv
import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import yaml

from adapters.registries.dci_simulator import READY_PREFIX

ROOT = Path(__file__).resolve().parents[3]

COLUMNS = (
    "given_names", "family_names", "date_of_birth", "sex", "nationality", "document_type", "document_number",
    "document_country", "external_ref",
)  # fmt: skip

#: The partner agency's caseload: documents written as its staff typed them.
PARTNER_CASELOAD = [
    {"given_names": "José Luis", "family_names": "García López", "date_of_birth": "1990-05-01", "sex": "male",
     "nationality": "CO", "document_type": "national_id", "document_number": "0079 845-321",
     "document_country": "CO", "external_ref": "NRC-1001"},
    {"given_names": "Ana María", "family_names": "Pérez Núñez", "date_of_birth": "07/03/1985", "sex": "female",
     "nationality": "VE", "document_type": "passport", "document_number": "ab-1234567",
     "document_country": "VE", "external_ref": "NRC-1002"},
    {"given_names": "Yésica", "family_names": "Ortiz Peña", "date_of_birth": "1988-04-12", "sex": "female",
     "nationality": "VE", "document_type": "", "document_number": "", "document_country": "",
     "external_ref": "NRC-1003"},
]  # fmt: skip


def write_caseload(path: Path, rows: list[Mapping[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _env() -> dict[str, str]:
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {k: v for k, v in os.environ.items() if not k.startswith("CBI_")} | {"PYTHONPATH": python_path}


@contextmanager
def registry_sim(records: Path, *, port: int = 0, api_key: str | None = None) -> Iterator[str]:
    """`cbi-service registry-sim` in its own process; yields its base URL once it answers."""
    args = [sys.executable, "-m", "cbi_service", "registry-sim", "--port", str(port), "--records", str(records)]
    env = _env() | ({"CBI_SIM_API_KEY": api_key} if api_key else {})
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            assert selector.select(30), "registry-sim did not start"
        line = process.stdout.readline()
        assert line.startswith(READY_PREFIX), (line, process.poll())
        base_url = line[len(READY_PREFIX) :].strip()
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "registry-sim did not answer"
                time.sleep(0.05)
        yield base_url
    finally:
        process.terminate()
        process.communicate(timeout=10)


@contextmanager
def silent_registry() -> Iterator[str]:
    """A registry that never answers: connections are accepted by the kernel (the listen backlog), then
    nothing is ever read or written."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as server:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


class RecordingProxy:
    """Forwards POSTs to a registry and keeps each (request, response) body: what went over the wire."""

    def __init__(self, upstream: str) -> None:
        self.exchanges: list[tuple[dict[str, Any], dict[str, Any]]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                answer = httpx.post(
                    upstream + self.path, content=body, headers={"Content-Type": "application/json"}, timeout=10
                )
                proxy.exchanges.append((json.loads(body), answer.json()))
                self.send_response(answer.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> RecordingProxy:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def standards_dir() -> Path:
    """The published DCI specifications: the unchanged copies in `tests/standards/` (see its README)."""
    return Path(__file__).resolve().parents[2] / "standards" / "dci"


@cache
def _spec(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((standards_dir() / name).read_text(encoding="utf-8"))
    spec: dict[str, Any] = json.loads(json.dumps(loaded, default=str))  # YAML dates in examples as strings
    _canonical_refs(spec, spec)
    return spec


def _unescape(segment: str) -> str:
    return segment.replace("~1", "/").replace("~0", "~")


def _escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


def _canonical(spec: dict[str, Any], ref: str) -> str:
    """The published specs point into schemas through other `$ref`s (`.../message/oneOf/0/properties/...`
    where `oneOf/0` is itself a `$ref`), as if they had been inlined: the same place, as a pointer that does
    not cross a `$ref`."""
    here: list[str] = []
    node: Any = spec
    for segment in (_unescape(s) for s in ref.removeprefix("#/").split("/")):
        while isinstance(node, dict) and "$ref" in node and segment not in node:
            here = [_unescape(s) for s in _canonical(spec, node["$ref"]).removeprefix("#/").split("/")]
            node = spec
            for step in here:
                node = node[int(step)] if isinstance(node, list) else node[step]
        node = node[int(segment)] if isinstance(node, list) else node[segment]
        here.append(segment)
    return "#/" + "/".join(_escape(s) for s in here)


def _canonical_refs(spec: dict[str, Any], node: Any) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
            node["$ref"] = _canonical(spec, node["$ref"])
        for value in node.values():
            _canonical_refs(spec, value)
    elif isinstance(node, list):
        for value in node:
            _canonical_refs(spec, value)


def validator(spec: str, pointer: str) -> Any:
    """A validator of the schema at `pointer` in an OpenAPI 3.0 document (JSON Schema draft 4 underneath),
    the document as root so that its `$ref`s resolve; formats (date-time) checked."""
    return jsonschema_rs.Draft4Validator({**_spec(spec), "$ref": pointer}, validate_formats=True)


SYNC_SEARCH = "#/paths/~1registry~1sync~1search/post"
SEARCH_REQUEST = SYNC_SEARCH + "/requestBody/content/application~1json/schema"
SEARCH_RESPONSE = SYNC_SEARCH + "/responses/default/content/application~1json/schema"
SOCIAL = "social_api_v1.0.0.yaml"
CORE = "registry_core_api_v1.0.0.yaml"


def schema_errors(spec: str, pointer: str, instance: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in validator(spec, pointer).iter_errors(instance)
    ]


class GatedRegistry:
    """A registry in front of another (`upstream`): it refuses, always, every search whose body holds one of
    `refused` (a registry that keeps rejecting that particular query, HTTP 400, not retried), and, with
    `hold`, keeps each search waiting until `release` is set (a slow registry), `asked` set meanwhile.
    `searches` counts the searches it was sent."""

    def __init__(self, upstream: str, *, refused: tuple[str, ...] = (), hold: bool = False) -> None:
        self.asked = threading.Event()
        self.release = threading.Event()
        self.refusals = 0
        self.searches = 0
        gate = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                gate.searches += 1
                if hold:
                    gate.asked.set()
                    gate.release.wait(30)
                if any(marker.encode() in body.lower() for marker in refused):
                    gate.refusals += 1
                    status, content = 400, b'{"errors": [{"code": "err.request.bad", "message": "refused"}]}'
                else:
                    answer = httpx.post(
                        upstream + self.path, content=body, headers={"Content-Type": "application/json"}, timeout=10
                    )
                    status, content = answer.status_code, answer.content
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> GatedRegistry:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
