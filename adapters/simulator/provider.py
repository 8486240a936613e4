"""What every simulated provider shares, whichever protocol it speaks: injected faults, the outage switch,
and the admin routes tests, the demo and benchmarks steer and observe it through."""

from __future__ import annotations

import asyncio
import math
import random
import time
from typing import Any, Protocol

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters.simulator.options import Faults, SimulatorOptions


class OutageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(ge=0, le=86_400)


class Fault(Exception):
    """An injected failure of the provider API, rendered in the protocol's error body."""

    def __init__(self, status_code: int, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.retry_after = retry_after


class InvalidAdminRequest(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FaultyProvider:
    """Fault settings and outage of one simulated provider; subclasses keep the books."""

    def __init__(self, options: SimulatorOptions) -> None:
        self.options = options
        self.faults = options.faults
        self.rng = random.Random(options.seed)  # noqa: S311 - fault injection, seedable on purpose
        self._outage_until = 0.0

    def start_outage(self, seconds: float) -> None:
        self._outage_until = time.monotonic() + seconds

    def end_outage(self) -> None:
        self._outage_until = 0.0

    async def before_call(self, *, unavailable: str = "service_unavailable") -> None:
        """Outage, latency and 5xx faults: all happen before the provider acts on the request."""
        remaining = self._outage_until - time.monotonic()
        if remaining > 0:
            raise Fault(503, unavailable, "scheduled outage", retry_after=math.ceil(remaining))
        faults = self.faults
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.failure_rate and self.rng.random() < faults.failure_rate:
            status = self.rng.choice((500, 502, 503))
            raise Fault(status, "injected_failure", "injected server error")

    async def after_call(self) -> None:
        """Timeout fault: the provider has acted but the answer never reaches the client in time."""
        faults = self.faults
        if faults.timeout_rate and self.rng.random() < faults.timeout_rate:
            await asyncio.sleep(faults.hang_seconds)


class _Observed(Protocol):
    faults: Faults

    def counters(self, *, per_key: bool) -> dict[str, Any]: ...

    def start_outage(self, seconds: float) -> None: ...

    def reset(self) -> None: ...


def admin_router(simulator: _Observed) -> APIRouter:
    """`/admin/counters`, `/admin/outage`, `/admin/faults` (GET, PATCH) and `/admin/reset`."""
    admin = APIRouter(prefix="/admin")

    @admin.get("/counters")
    async def counters(per_key: bool = True) -> dict[str, Any]:
        return simulator.counters(per_key=per_key)

    @admin.post("/outage")
    async def outage(body: OutageRequest) -> dict[str, float]:
        simulator.start_outage(body.seconds)
        return {"seconds": body.seconds}

    @admin.get("/faults")
    async def get_faults() -> Faults:
        return simulator.faults

    @admin.patch("/faults")
    async def patch_faults(body: dict[str, Any]) -> Faults:
        try:
            simulator.faults = Faults.model_validate({**simulator.faults.model_dump(), **body})
        except ValidationError as exc:
            raise InvalidAdminRequest(str(exc)) from None
        return simulator.faults

    @admin.post("/reset")
    async def reset() -> dict[str, bool]:
        simulator.reset()
        return {"reset": True}

    return admin
