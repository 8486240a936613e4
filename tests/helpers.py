"""Small builders shared by the test packages."""

from __future__ import annotations

from typing import Any

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


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with `status`; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers["content-type"]
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    return body
