"""Client for the simulator's admin routes: what tests, the demo and benchmarks use to steer and observe it."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any, Self

import httpx


class SimulatorAdmin:
    def __init__(self, base_url: str) -> None:
        self._client = httpx.AsyncClient(base_url=base_url, timeout=30.0)

    async def counters(self, *, per_key: bool = True) -> dict[str, Any]:
        """Instructions received per idempotency key, card loads, vouchers, webhooks sent/duplicated..."""
        return await self._call("GET", "/admin/counters", params={"per_key": per_key})

    async def messages(self) -> dict[str, Any]:
        """G2P Connect: the latest requests received and callbacks sent, as `{"received": [...], "sent": [...]}`."""
        return await self._call("GET", "/admin/messages")

    async def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Change only the given faults, e.g. `set_faults(failure_rate=0.2, reorder=True)`."""
        return await self._call("PATCH", "/admin/faults", json=faults)

    async def outage(self, seconds: float) -> None:
        """Every provider API call answers 503 for `seconds` (0 ends an outage early)."""
        await self._call("POST", "/admin/outage", json={"seconds": seconds})

    async def redeem(self, voucher_code: str, amount_minor: int, merchant: str) -> dict[str, Any]:
        return await self._call(
            "POST", f"/admin/vouchers/{voucher_code}/redeem", json={"amount_minor": amount_minor, "merchant": merchant}
        )

    async def expire(self, voucher_code: str) -> dict[str, Any]:
        return await self._call("POST", f"/admin/vouchers/{voucher_code}/expire")

    async def reset(self) -> None:
        await self._call("POST", "/admin/reset")

    async def drained(self) -> dict[str, Any]:
        """Counters once every accepted instruction is processed and every webhook delivered or abandoned.

        Waits as long as that takes; bound it with `asyncio.timeout(...)`.
        """
        while True:
            current = await self.counters(per_key=False)
            if current["webhooks_pending"] == 0 and current["instructions_pending"] == 0:
                return current
            await asyncio.sleep(0.02)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._client.request(method, path, **kwargs)
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body
