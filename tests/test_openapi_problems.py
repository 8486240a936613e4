"""Every error status an operation can answer is in its OpenAPI entry, as a Problem."""

from __future__ import annotations

from tests.support import assert_problem

PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _operations(app):
    return [
        (f"{method.upper()} {path}", operation)
        for path, item in app.openapi()["paths"].items()
        for method, operation in item.items()
    ]


def _documents_problem(operation, status: str) -> bool:
    response = operation["responses"].get(status)
    return response is not None and response["content"]["application/problem+json"]["schema"] == PROBLEM


def test_every_operation_documents_its_422(app):
    for name, operation in _operations(app):
        assert _documents_problem(operation, "422"), name
        description = operation["responses"]["422"]["description"]
        for refusal in ("cursor", "phone", "minor-unit digits", "provider", "Idempotency-Key", "NUL", "RFC 3339"):
            assert refusal in description, (name, refusal)


def test_operations_taking_a_body_document_413(app):
    with_body = [(name, operation) for name, operation in _operations(app) if "requestBody" in operation]
    assert {"POST /v1/webhooks/{provider}", "POST /v1/beneficiaries/imports"} <= {name for name, _ in with_body}
    assert [name for name, operation in with_body if not _documents_problem(operation, "413")] == []


def test_operations_needing_the_database_document_503_with_retry_after(app):
    for name, operation in _operations(app):
        if name in {"GET /healthz", "GET /metrics", "GET /v1/vouchers/keys", "GET /v1/ledger/export/manifest/keys"}:
            assert "503" not in operation["responses"], name
        elif name != "GET /readyz":
            assert _documents_problem(operation, "503"), name
            assert "Retry-After" in operation["responses"]["503"]["headers"], name


async def test_an_oversized_webhook_is_a_documented_413(app, client, settings):
    oversized = b"x" * (settings.max_webhook_body_bytes + 1)
    response = await client.post("/v1/webhooks/cards", content=oversized, headers={"Content-Type": "application/json"})
    assert_problem(response, 413)
    operation = app.openapi()["paths"]["/v1/webhooks/{provider}"]["post"]
    assert _documents_problem(operation, "413")
