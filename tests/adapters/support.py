"""A webhook receiver playing the service's endpoint, and names shared by the adapter tests."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

API_KEY = "sim-test-key"

ProviderConfig = Callable[..., dict[str, Any]]
"""`provider_config("voucher", timeout_seconds=0.3)` → a CBI_PROVIDERS entry for the test simulator."""


@dataclass(frozen=True)
class ReceivedWebhook:
    headers: dict[str, str]
    body: bytes
    answered: int
    verified: bool

    @property
    def msg_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads(self.body)
        return payload


class WebhookReceiver:
    """Plays the service's webhook endpoint: verifies every request with standardwebhooks and records it."""

    def __init__(self, secret: str) -> None:
        self._verifier = Webhook(secret)
        self._lock = threading.Lock()
        self._received: list[ReceivedWebhook] = []
        self._failures_left = 0
        sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/webhooks/sim"
        config = uvicorn.Config(self._app, interface="asgi3", log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "webhook receiver did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(5)

    def fail_next(self, count: int) -> None:
        """Answer 500 to the next `count` requests, like a service that is briefly down."""
        with self._lock:
            self._failures_left = count

    def clear(self) -> None:
        with self._lock:
            self._received.clear()
            self._failures_left = 0

    @property
    def all_requests(self) -> list[ReceivedWebhook]:
        with self._lock:
            return list(self._received)

    @property
    def accepted(self) -> list[ReceivedWebhook]:
        return [request for request in self.all_requests if request.answered == 204]

    async def wait_for_accepted(self, count: int, timeout: float = 10.0) -> list[ReceivedWebhook]:
        deadline = time.monotonic() + timeout
        while len(accepted := self.accepted) < count:
            assert time.monotonic() < deadline, f"only {len(accepted)} of {count} webhooks arrived"
            await asyncio.sleep(0.02)
        return accepted

    async def _app(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        try:
            self._verifier.verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        with self._lock:
            failing = self._failures_left > 0
            self._failures_left -= failing
            answered = 500 if failing else 204 if verified else 401
            self._received.append(ReceivedWebhook(headers, body, answered, verified))
        await send({"type": "http.response.start", "status": answered, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()
