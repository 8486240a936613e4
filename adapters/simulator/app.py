"""The simulator's HTTP API: the provider API the adapters call, plus admin routes for tests and demos."""

from __future__ import annotations

import asyncio
import hmac
import math
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters.providers.wire import (
    CancelRequest,
    CancelResponse,
    ErrorBody,
    ErrorDetail,
    InstructionsRequest,
    InstructionsResponse,
    InstructionView,
)
from adapters.simulator.delivery import DeliveryCounters, WebhookDispatcher
from adapters.simulator.options import Faults, SimulatorOptions
from adapters.simulator.state import Instruction, ProviderState, Refused

_PROCESSING_BATCH = 1000


class OutageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(ge=0, le=86_400)


class RedeemRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_minor: int = Field(gt=0)
    merchant: str = Field(min_length=1, max_length=200)


class Simulator:
    """One provider: its books, its fault settings, its processing queue and its webhook dispatcher."""

    def __init__(self, options: SimulatorOptions) -> None:
        self.options = options
        self.faults = options.faults
        self._rng = random.Random(options.seed)  # noqa: S311 - fault injection, seedable on purpose
        self.state = ProviderState(self._rng)
        self.dispatcher = WebhookDispatcher(
            options.webhook_url,
            options.webhook_secret,
            concurrency=options.delivery_concurrency,
            max_attempts=options.delivery_max_attempts,
            timeout=options.delivery_timeout_seconds,
            faults=lambda: self.faults,
            rng=self._rng,
        )
        self._processing: asyncio.Queue[Instruction] = asyncio.Queue()
        self._processor: asyncio.Task[None] | None = None
        self._outage_until = 0.0

    async def start(self) -> None:
        self.dispatcher.start()
        self._processor = asyncio.create_task(self._process_forever())

    async def stop(self) -> None:
        if self._processor is not None:
            self._processor.cancel()
            await asyncio.gather(self._processor, return_exceptions=True)
        await self.dispatcher.stop()

    def receive(self, request: InstructionsRequest) -> InstructionsResponse:
        results = []
        for item in request.instructions:
            result, to_process = self.state.receive(item)
            results.append(result)
            if to_process is not None:
                self._processing.put_nowait(to_process)
        return InstructionsResponse(results=results)

    def start_outage(self, seconds: float) -> None:
        self._outage_until = time.monotonic() + seconds

    async def before_call(self) -> None:
        """Outage, latency and 5xx faults: all happen before the provider acts on the request."""
        remaining = self._outage_until - time.monotonic()
        if remaining > 0:
            raise _Fault(503, "service_unavailable", "scheduled outage", retry_after=math.ceil(remaining))
        faults = self.faults
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        if faults.failure_rate and self._rng.random() < faults.failure_rate:
            status = self._rng.choice((500, 502, 503))
            raise _Fault(status, "injected_failure", "injected server error")

    async def after_call(self) -> None:
        """Timeout fault: the provider has acted but the answer never reaches the client in time."""
        faults = self.faults
        if faults.timeout_rate and self._rng.random() < faults.timeout_rate:
            await asyncio.sleep(faults.hang_seconds)

    def counters(self, *, per_key: bool) -> dict[str, Any]:
        delivery = self.dispatcher.counters
        return {
            **self.state.counters(per_key=per_key),
            "instructions_pending": self._processing.qsize(),
            "webhooks_emitted": delivery.emitted,
            "webhooks_sent": delivery.sent,
            "webhooks_duplicated": delivery.duplicated,
            "webhook_attempts_failed": delivery.failed_attempts,
            "webhooks_abandoned": delivery.abandoned,
            "webhooks_pending": self.dispatcher.pending,
        }

    def reset(self) -> None:
        """Forget everything except work already in flight, so each test starts from zero."""
        self.state = ProviderState(self._rng)
        self.dispatcher.counters = DeliveryCounters()
        self._outage_until = 0.0

    async def _process_forever(self) -> None:
        while True:
            batch = [await self._processing.get()]
            while len(batch) < _PROCESSING_BATCH and not self._processing.empty():
                batch.append(self._processing.get_nowait())
            decline_rate = self.faults.decline_rate
            for instruction in batch:
                event = self.state.process(instruction, decline_rate)
                if event is not None:
                    self.dispatcher.emit(*event)
            await asyncio.sleep(0)


class _Fault(Exception):
    def __init__(self, status_code: int, code: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.retry_after = retry_after


def _error(status_code: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message))
    return JSONResponse(body.model_dump(), status_code=status_code, headers=headers)


def create_app(options: SimulatorOptions) -> FastAPI:
    simulator = Simulator(options)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await simulator.start()
        try:
            yield
        finally:
            await simulator.stop()

    app = FastAPI(title="CBI provider simulator", lifespan=lifespan)
    app.state.simulator = simulator

    @app.exception_handler(_Fault)
    async def _on_fault(_: Request, exc: _Fault) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return _error(exc.status_code, exc.code, exc.message, headers)

    @app.exception_handler(Refused)
    async def _on_refused(_: Request, exc: Refused) -> JSONResponse:
        return _error(exc.status_code, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = ", ".join(".".join(str(part) for part in error["loc"]) for error in exc.errors())
        return _error(422, "invalid_request", f"invalid fields: {fields}")

    def authorize(authorization: Annotated[str | None, Header()] = None) -> None:
        if options.api_key is None:
            return
        expected = f"Bearer {options.api_key}".encode()
        if authorization is None or not hmac.compare_digest(authorization.encode(), expected):
            raise Refused(401, "unauthorized", "missing or wrong API key")

    provider = APIRouter(dependencies=[Depends(authorize)])

    @provider.post("/instructions")
    async def create_instructions(body: InstructionsRequest) -> InstructionsResponse:
        await simulator.before_call()
        response = simulator.receive(body)
        await simulator.after_call()
        return response

    @provider.get("/instructions/{idempotency_key}")
    async def get_instruction(idempotency_key: str) -> InstructionView:
        await simulator.before_call()
        view = simulator.state.view(idempotency_key)
        await simulator.after_call()
        if view is None:
            raise Refused(404, "not_found", "no instruction under this key")
        return view

    @provider.post("/instructions/{idempotency_key}/cancel", response_model=CancelResponse)
    async def cancel_instruction(idempotency_key: str, body: CancelRequest | None = None) -> JSONResponse:
        await simulator.before_call()
        status_code, answer = simulator.state.cancel(idempotency_key, body.provider_ref if body else None)
        await simulator.after_call()
        return JSONResponse(answer.model_dump(mode="json"), status_code=status_code)

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
            raise Refused(422, "invalid_request", str(exc)) from None
        return simulator.faults

    @admin.post("/reset")
    async def reset() -> dict[str, bool]:
        simulator.reset()
        return {"reset": True}

    @admin.post("/vouchers/{voucher_code}/redeem")
    async def redeem(voucher_code: str, body: RedeemRequest) -> InstructionView | None:
        simulator.dispatcher.emit(*simulator.state.redeem(voucher_code, body.amount_minor, body.merchant))
        return simulator.state.view(simulator.state.vouchers[voucher_code])

    @admin.post("/vouchers/{voucher_code}/expire")
    async def expire(voucher_code: str) -> InstructionView | None:
        simulator.dispatcher.emit(*simulator.state.expire(voucher_code))
        return simulator.state.view(simulator.state.vouchers[voucher_code])

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(provider)
    app.include_router(admin)
    return app
