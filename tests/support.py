"""Small builders shared by the test packages."""

from __future__ import annotations

import socket
from types import SimpleNamespace
from typing import Any

import httpx

from cbi_service.jobs.worker import Worker

PROBLEM_JSON = "application/problem+json"


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
