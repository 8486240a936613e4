"""The simulator's HTTP API: the provider API the adapters call, plus admin routes for tests and demos.

`create_app` serves the protocol the options name: the native one here, G2P Connect from `g2p`.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from adapters.providers.wire import (
    CancelRequest,
    CancelResponse,
    ErrorBody,
    ErrorDetail,
    InstructionsRequest,
    InstructionsResponse,
    InstructionView,
)
from adapters.simulator import g2p
from adapters.simulator.delivery import DeliveryCounters, WebhookDispatcher, standard_webhooks
from adapters.simulator.options import SimulatorOptions
from adapters.simulator.provider import Fault, FaultyProvider, InvalidAdminRequest, admin_router
from adapters.simulator.state import Instruction, ProviderState, Refused

_PROCESSING_BATCH = 1000


class RedeemRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_minor: int = Field(gt=0)
    merchant: str = Field(min_length=1, max_length=200)


class Simulator(FaultyProvider):
    """One provider: its books, its fault settings, its processing queue and its webhook dispatcher."""

    def __init__(self, options: SimulatorOptions) -> None:
        super().__init__(options)
        assert options.webhook_secret is not None, "checked by SimulatorOptions"
        self.state = ProviderState(self.rng)
        self.dispatcher = WebhookDispatcher(
            options.webhook_url,
            standard_webhooks(options.webhook_secret),
            concurrency=options.delivery_concurrency,
            max_attempts=options.delivery_max_attempts,
            timeout=options.delivery_timeout_seconds,
            faults=lambda: self.faults,
            rng=self.rng,
        )
        self._processing: asyncio.Queue[Instruction] = asyncio.Queue()
        self._processor: asyncio.Task[None] | None = None

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
            "webhooks_dropped": delivery.dropped,
            "webhooks_pending": self.dispatcher.pending,
        }

    def reset(self) -> None:
        """Forget everything except work already in flight, so each test starts from zero."""
        self.state = ProviderState(self.rng)
        self.dispatcher.counters = DeliveryCounters()
        self.end_outage()

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


def _error(status_code: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message))
    return JSONResponse(body.model_dump(), status_code=status_code, headers=headers)


def create_app(options: SimulatorOptions) -> FastAPI:
    if options.protocol == "g2p-connect":
        return g2p.create_app(options)
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

    @app.exception_handler(Fault)
    async def _on_fault(_: Request, exc: Fault) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return _error(exc.status_code, exc.code, exc.message, headers)

    @app.exception_handler(Refused)
    async def _on_refused(_: Request, exc: Refused) -> JSONResponse:
        return _error(exc.status_code, exc.code, exc.message)

    @app.exception_handler(InvalidAdminRequest)
    async def _on_invalid_admin(_: Request, exc: InvalidAdminRequest) -> JSONResponse:
        return _error(422, "invalid_request", exc.message)

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

    admin = admin_router(simulator)

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
