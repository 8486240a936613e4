"""Callback delivery with the semantics of a real provider: signed, at least once, retried with backoff.

What is sent and how it is signed is the protocol's (`Sign`): Standard Webhooks headers over the body for
the native protocol (`standard_webhooks`), a `signature` inside the body for G2P Connect.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from standardwebhooks import Webhook

from adapters.simulator.http1 import Http1Connection
from adapters.simulator.options import Faults

logger = logging.getLogger(__name__)

_BACKOFF_BASE_SECONDS = 0.25
_BACKOFF_CAP_SECONDS = 30.0


Sign = Callable[[str, Any], tuple[dict[str, str], bytes]]
"""(message id, content) → the headers and body of one attempt, signed now."""


@dataclass(slots=True)
class _Delivery:
    msg_id: str
    content: Any
    attempts: int = 0


@dataclass(slots=True)
class DeliveryCounters:
    emitted: int = 0
    sent: int = 0
    duplicated: int = 0
    failed_attempts: int = 0
    abandoned: int = 0
    dropped: int = 0


def standard_webhooks(secret: str) -> Sign:
    """Standard Webhooks: the body as it is, `webhook-id`, `webhook-timestamp` and `webhook-signature`."""
    signer = Webhook(secret)

    def sign(msg_id: str, body: Any) -> tuple[dict[str, str], bytes]:
        now = datetime.now(UTC)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(msg_id, now, body.decode()),
        }
        return headers, body

    return sign


class WebhookDispatcher:
    """Signs and POSTs callbacks to one URL.

    A bounded pool of workers, each with one keep-alive connection, delivers concurrently without opening
    unbounded sockets against the service. A failed attempt goes back to the queue after an exponential
    backoff with jitter, held by a timer rather than a worker, so an outage of the service delays events
    without stalling the others. Every attempt is signed anew (fresh timestamp) under the same message id,
    which is how receivers recognise redeliveries; injected duplicates reuse the id too.
    """

    def __init__(
        self,
        url: str,
        sign: Sign,
        *,
        concurrency: int,
        max_attempts: int,
        timeout: float,
        faults: Callable[[], Faults],
        rng: random.Random,
    ) -> None:
        self._url = url
        self._sign = sign
        self._concurrency = concurrency
        self._max_attempts = max_attempts
        self._timeout = timeout
        self._faults = faults
        self._rng = rng
        self._queue: asyncio.Queue[_Delivery] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self.counters = DeliveryCounters()
        self.pending = 0
        """Deliveries not yet acknowledged or abandoned; kept across counter resets."""

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._work()) for _ in range(self._concurrency)]

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    def emit(self, event_type: str, data: Mapping[str, Any]) -> None:
        """A Standard Webhooks event (the native protocol)."""
        timestamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        body = json.dumps({"type": event_type, "timestamp": timestamp, "data": data}, separators=(",", ":")).encode()
        self.send(f"msg_{uuid4().hex}", body)

    def send(self, msg_id: str, content: Any) -> None:
        """Deliver `content` under `msg_id`, unless the faults drop it, twice if they duplicate it."""
        faults = self._faults()
        self.counters.emitted += 1
        if faults.drop_rate and self._rng.random() < faults.drop_rate:
            self.counters.dropped += 1
            return
        self._enqueue(_Delivery(msg_id, content), faults)
        if faults.duplicate_rate and self._rng.random() < faults.duplicate_rate:
            self.counters.duplicated += 1
            self._enqueue(_Delivery(msg_id, content), faults)

    def _enqueue(self, delivery: _Delivery, faults: Faults) -> None:
        self.pending += 1
        if faults.reorder:
            self._later(self._rng.uniform(0, faults.reorder_window_ms / 1000), delivery)
        else:
            self._queue.put_nowait(delivery)

    def _later(self, delay: float, delivery: _Delivery) -> None:
        def release() -> None:
            self._timers.discard(timer)
            self._queue.put_nowait(delivery)

        timer = asyncio.get_running_loop().call_later(delay, release)
        self._timers.add(timer)

    async def _work(self) -> None:
        connection = Http1Connection(self._url, self._timeout)
        try:
            while True:
                delivery = await self._queue.get()
                if await self._attempt(connection, delivery):
                    self.counters.sent += 1
                    self.pending -= 1
                else:
                    self._retry_later(delivery)
        finally:
            connection.close()

    def _retry_later(self, delivery: _Delivery) -> None:
        delivery.attempts += 1
        self.counters.failed_attempts += 1
        if delivery.attempts >= self._max_attempts:
            self.counters.abandoned += 1
            self.pending -= 1
            logger.warning("webhook %s abandoned after %d attempts", delivery.msg_id, delivery.attempts)
            return
        ceiling = min(_BACKOFF_CAP_SECONDS, _BACKOFF_BASE_SECONDS * 2 ** (delivery.attempts - 1))
        self._later(ceiling * self._rng.uniform(0.5, 1.0), delivery)

    async def _attempt(self, connection: Http1Connection, delivery: _Delivery) -> bool:
        headers, body = self._sign(delivery.msg_id, delivery.content)
        try:
            status = await connection.post(headers, body)
        except Exception as exc:  # every way an attempt can fail means "retry later"; a worker never dies
            logger.debug("webhook %s attempt failed: %r", delivery.msg_id, exc)
            return False
        return 200 <= status < 300
