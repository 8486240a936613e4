"""Small builders shared by the test packages."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
from pydantic import SecretStr

from cbi_service.jobs.worker import Worker

PROBLEM_JSON = "application/problem+json"


@dataclass
class Actors:
    """One API key per person, so segregation of duties can be exercised."""

    admin: dict[str, str]
    registrar: dict[str, str]
    officer: dict[str, str]
    approver1: dict[str, str]
    approver2: dict[str, str]
    approver3: dict[str, str]
    finance: dict[str, str]
    auditor: dict[str, str]

    @property
    def approver(self) -> dict[str, str]:
        """The approver of a programme that needs one approval."""
        return self.approver1


async def make_actors(api_key_factory: Any) -> Actors:
    return Actors(
        admin=await api_key_factory("admin", name="admin"),
        registrar=await api_key_factory("registrar", name="registrar"),
        officer=await api_key_factory("programme_officer", name="officer"),
        approver1=await api_key_factory("approver", name="approver-1"),
        approver2=await api_key_factory("approver", name="approver-2"),
        approver3=await api_key_factory("approver", name="approver-3"),
        finance=await api_key_factory("finance", name="finance"),
        auditor=await api_key_factory("auditor", name="auditor"),
    )


def programme_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Multipurpose cash Cúcuta 2026",
        "country": "CO",
        "currency": "COP",
        "sector": "multipurpose_cash",
        "delivery_mechanism": "prepaid_card",
        "provider": "cards",
    }
    body.update(overrides)
    return body


async def make_programme(client: httpx.AsyncClient, admin: Any, **overrides: Any) -> dict[str, Any]:
    """A programme created over the API from `programme_body(**overrides)`; returns its body.

    `admin` is an admin's headers, or the actors of a test (anything with an `admin` attribute holding them).
    """
    headers = getattr(admin, "admin", admin)
    response = await client.post("/v1/programmes", json=programme_body(**overrides), headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def approve_batch(
    client: httpx.AsyncClient, batch_body: dict[str, Any], *, officer: Any, approvers: list[Any]
) -> dict[str, Any]:
    """The maker-checker half of a payment cycle: a batch created from `batch_body` and submitted by
    `officer`, then approved by each of `approvers` (headers); returns the batch as the last approval left it."""
    response = await client.post("/v1/payment-batches", json=batch_body, headers=officer)
    assert response.status_code == 201, response.text
    batch_id = response.json()["id"]
    response = await client.post(f"/v1/payment-batches/{batch_id}/submit", headers=officer)
    assert response.status_code == 200, response.text
    for approver in approvers:
        response = await client.post(
            f"/v1/payment-batches/{batch_id}/approvals", json={"decision": "approve"}, headers=approver
        )
        assert response.status_code == 200, response.text
    assert response.json()["status"] == "approved", response.text
    return dict(response.json())


async def release_batch(client: httpx.AsyncClient, batch_id: str, *, finance: Any) -> httpx.Response:
    """The last step of a payment cycle: finance releases the approved batch (under a key of its own)."""
    headers = {**finance, "Idempotency-Key": f"rel-{batch_id}"}
    return await client.post(f"/v1/payment-batches/{batch_id}/release", headers=headers)


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with `status`; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers["content-type"]
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    return body


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run_jobs(session_factory: Any, settings: Any) -> None:
    """Run queued jobs until none is ready."""
    await Worker(session_factory, SimpleNamespace(settings=settings)).run_until_idle()


@contextlib.contextmanager
def running_serve(
    env: dict[str, str], *, seconds: float = 90, cwd: Path | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], int, Any]]:
    """`cbi-service serve` in its own process on a free port (in `cwd`, if given), yielded once `/readyz`
    answers: (process, port, that first answer). Stopped with SIGTERM on the way out, and waited for."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "cbi_service", "serve", "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + seconds
        while True:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None, "serve exited"
                assert time.monotonic() < deadline, "serve did not come up"
                time.sleep(0.5)
        yield server, port, ready
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def revealed(options: dict[str, dict[str, Any]]) -> str:
    """`CBI_PROVIDERS` or `CBI_REGISTRIES` as JSON with the secrets in clear, for a child process's environment."""

    def plain(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, list):
            return [plain(item) for item in value]
        return value

    return json.dumps({name: {k: plain(v) for k, v in entry.items()} for name, entry in options.items()})


async def sealed_person(
    session: Any, ident: uuid.UUID, given: str, family: str, born: date, *, phone: str | None = None, record: Any = None
) -> dict[str, Any]:
    """The sealed columns of a person written straight into the registry (seeding many people at once)."""
    from cbi_service.beneficiaries.personal import Personal, sealed_columns
    from cbi_service.dedup.normalize import build_record
    from cbi_service.kit.crypto import keyring

    ring = await keyring(session)
    record = record or build_record(given_names=given, family_names=family, date_of_birth=born)
    return sealed_columns(
        ring, await ring.active(session), ident, Personal(given, family, born, phone, None, []), record
    )
