"""Bodies are refused as they stream in: over the route's limit → 413, no key → 401, before the rest is read."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from cbi_service.beneficiaries.imports import TEMPLATE_COLUMNS
from tests.beneficiaries.support import person_body
from tests.support import PROBLEM_JSON, assert_problem

JSON_LIMIT = 4096
UPLOAD_LIMIT = 256 << 10
CHUNK = 1024


@pytest.fixture
def settings(settings):
    limits = {"max_json_body_bytes": JSON_LIMIT, "max_upload_body_bytes": UPLOAD_LIMIT, "max_webhook_body_bytes": 2048}
    return settings.model_copy(update=limits)


@dataclass
class RawExchange:
    """One request fed to the ASGI app chunk by chunk, counting how much of the body the app pulled."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    chunks_read: int = 0

    def problem(self) -> dict[str, Any]:
        assert self.headers["content-type"].startswith(PROBLEM_JSON)
        return json.loads(self.body)


async def exchange(
    app: Any, path: str, headers: dict[str, str], *, chunks: int, declare_length: bool = True
) -> RawExchange:
    """POST a body of `chunks` × 1 KiB, with its Content-Length or chunked (none declared)."""
    result = RawExchange()
    raw_headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    if declare_length:
        raw_headers.append((b"content-length", str(chunks * CHUNK).encode()))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"), *raw_headers],
        "client": ("127.0.0.1", 5000), "server": ("testserver", 80),
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        if result.chunks_read >= chunks:
            return {"type": "http.disconnect"}
        result.chunks_read += 1
        return {"type": "http.request", "body": b" " * CHUNK, "more_body": result.chunks_read < chunks}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            result.status = message["status"]
            result.headers = {k.decode().lower(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            result.body += message.get("body", b"")

    await app(scope, receive, send)
    return result


async def test_a_declared_length_over_the_limit_is_refused_before_reading(app, api_key_factory):
    headers = await api_key_factory("admin")
    result = await exchange(app, "/v1/programmes", headers, chunks=400 * 1024)  # 400 MiB declared
    assert result.status == 413
    assert result.problem()["status"] == 413
    assert result.chunks_read == 0
    assert result.headers["connection"] == "close"


async def test_a_chunked_body_is_cut_off_when_it_passes_the_limit(app, api_key_factory):
    headers = await api_key_factory("admin")
    result = await exchange(app, "/v1/programmes", headers, chunks=400 * 1024, declare_length=False)
    assert result.status == 413
    assert result.chunks_read == JSON_LIMIT // CHUNK + 1


@pytest.mark.parametrize(
    "authorization", [None, "Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer two words", "cbi_no_scheme"]
)
async def test_a_body_without_a_well_formed_key_is_refused_before_reading(app, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    for declare_length in (True, False):
        result = await exchange(app, "/v1/programmes", headers, chunks=300 * 1024, declare_length=declare_length)
        assert result.status == 401
        assert result.problem()["title"] == "Unauthorized"
        assert result.headers["www-authenticate"] == "Bearer"
        assert result.chunks_read == 0


async def test_unknown_routes_and_methods_still_answer_404_and_405(client):
    assert_problem(await client.post("/v1/nothing-here", content=b"x" * (JSON_LIMIT * 2)), 404)
    assert_problem(await client.post("/healthz", content=b"x" * (JSON_LIMIT * 2)), 405)


async def test_json_under_the_limit_is_served(client, api_key_factory):
    headers = await api_key_factory("registrar")
    body = person_body()
    assert len(json.dumps(body)) < JSON_LIMIT
    assert (await client.post("/v1/beneficiaries", json=body, headers=headers)).status_code == 201


def _csv_of_size(size: int) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(TEMPLATE_COLUMNS)
    while out.tell() < size:
        writer.writerow(["Ana", "Pérez", "1985-06-20", "female", "VE"] + [""] * (len(TEMPLATE_COLUMNS) - 5))
    return out.getvalue().encode()


async def test_uploads_have_their_own_larger_limit(client, api_key_factory):
    headers = await api_key_factory("registrar")
    fits = {"file": ("people.csv", _csv_of_size(UPLOAD_LIMIT // 2), "text/csv")}
    assert (await client.post("/v1/beneficiaries/imports", files=fits, headers=headers)).status_code == 202
    too_big = {"file": ("people.csv", _csv_of_size(UPLOAD_LIMIT + 1), "text/csv")}
    body = assert_problem(await client.post("/v1/beneficiaries/imports", files=too_big, headers=headers), 413)
    assert str(UPLOAD_LIMIT) in body["detail"]
    statement = {"file": ("s.csv", b"x" * (UPLOAD_LIMIT + 1), "text/csv")}
    response = await client.post("/v1/reconciliations", data={"provider": "cards"}, files=statement, headers=headers)
    assert_problem(response, 413)


async def test_an_upload_without_a_key_is_refused_before_reading(app):
    headers = {"content-type": "multipart/form-data; boundary=x"}
    result = await exchange(app, "/v1/beneficiaries/imports", headers, chunks=300 * 1024)
    assert result.status == 401
    assert result.chunks_read == 0


async def test_webhooks_need_no_key_but_get_a_small_limit(app):
    small = await exchange(app, "/v1/webhooks/cards", {}, chunks=1)
    assert small.status == 401  # read, then refused for its missing signature
    assert small.chunks_read == 1
    assert "signature" in small.problem()["detail"]
    large = await exchange(app, "/v1/webhooks/cards", {}, chunks=4)
    assert large.status == 413
    assert large.chunks_read == 0
