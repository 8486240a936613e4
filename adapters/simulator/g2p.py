"""The simulator speaking G2P Connect Disburse v1.0.0 (`--protocol g2p-connect`), with the same faults.

- `POST /disburse`: a signed request (verified with the client's public key) is answered `ACK` at once; each
  disbursement is processed later and reported in signed `on-disburse` callbacks, per transaction, at most
  `callback_max_items` a message. A `reference_id` seen before is paid at most once: unless its earlier
  attempt was rejected (then it is attempted again), it is answered `rjct.reference_id.duplicate`.
- `POST /disburse/txn/status`: `ACK`, then a `txn/on-status` callback per transaction the references belong
  to (a reference it never received: `rjct.reference_id.invalid`).
- `POST /disburse/sync/txn/status`: the same answer, signed, in the response.

The faults are the native simulator's: 5xx, latency, timeouts and outages of these routes; duplicated,
reordered and dropped callbacks; declines (`rjct` with a reason code). Its counters prove exactly-once
payment: `disbursed` and `distinct_references_disbursed` agree and `paid_more_than_once` stays 0.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from adapters.providers.g2p_connect import messages
from adapters.providers.g2p_connect.messages import (
    DisbursementIn,
    DisburseRequest,
    RequestHeader,
    RequestStatus,
    TxnStatusRequest,
)
from adapters.providers.g2p_connect.signature import SignatureError, Signer, private_key, verifier
from adapters.simulator.delivery import DeliveryCounters, Sign, WebhookDispatcher
from adapters.simulator.options import SimulatorOptions
from adapters.simulator.provider import Fault, FaultyProvider, InvalidAdminRequest, admin_router

_M = TypeVar("_M", bound=BaseModel)
_Message = tuple[dict[str, Any], dict[str, Any]]
"""A message's header and body, before it is signed."""
_PROCESSING_BATCH = 1000
_KEPT_MESSAGES = 200
"""The latest requests received and callbacks sent, kept for `GET /admin/messages` (tests check them against
the published schema)."""
_PAYEE_FA = re.compile(r"^[A-Za-z0-9.:_-]+@[A-Za-z0-9.-]+$")
_DECLINES = (
    ("rjct.payee_fa.invalid", "the payee's account is closed"),
    ("rjct.payer_fa.invalid", "the payer's account cannot cover it"),
    ("rjct.timestamp.invalid", "the instruction arrived outside its window"),
)
_STATUS_ACTIONS = {"/disburse/txn/status": ("on-disburse", "on-search"), "/disburse/sync/txn/status": ("search",)}


@dataclass(slots=True)
class Disbursement:
    item: DisbursementIn
    transaction_id: str
    requester: str
    status: RequestStatus = "pdng"
    reason_code: str | None = None
    reason_message: str | None = None
    timestamp: str = field(default_factory=messages.now_text)
    payments: int = 0

    def status_item(self) -> dict[str, Any]:
        """One entry of `disbursements_status`, with the optional fields a provider fills in."""
        entry: dict[str, Any] = {
            "reference_id": self.item.reference_id,
            "timestamp": self.timestamp,
            "status": self.status,
            "amount": self.item.amount,
            "payer_fa": self.item.payer_fa,
            "payee_fa": self.item.payee_fa,
        }
        if self.item.currency_code:
            entry["currency_code"] = self.item.currency_code
        if self.reason_code:
            entry["status_reason_code"] = self.reason_code
        if self.reason_message:
            entry["status_reason_message"] = self.reason_message
        return entry


def _rejected(reference_id: str, code: str, message: str) -> dict[str, Any]:
    return {
        "reference_id": reference_id,
        "timestamp": messages.now_text(),
        "status": "rjct",
        "status_reason_code": code,
        "status_reason_message": message,
    }


@dataclass(slots=True)
class _Work:
    """A disbursement to process, or a status already decided (a duplicate), under `transaction_id`."""

    transaction_id: str
    requester: str
    disbursement: Disbursement | None = None
    decided: dict[str, Any] | None = None


@dataclass
class G2PBooks:
    """Disbursements by reference_id, and the counters. Synchronous methods on one event loop: no request
    interleaves between a check and its change, so one reference is paid at most once."""

    disbursements: dict[str, Disbursement] = field(default_factory=dict)
    received_per_reference: Counter[str] = field(default_factory=Counter)
    issued_minor: Counter[str] = field(default_factory=Counter)
    disburse_requests: int = 0
    items_received: int = 0
    repeated_references: int = 0
    disbursed: int = 0
    paid_more_than_once: int = 0
    rejected: int = 0
    rejected_duplicates: int = 0
    status_requests: int = 0
    status_references_asked: int = 0

    def receive(self, transaction_id: str, requester: str, item: DisbursementIn) -> _Work:
        reference = item.reference_id
        self.items_received += 1
        self.received_per_reference[reference] += 1
        if self.received_per_reference[reference] == 2:
            self.repeated_references += 1
        existing = self.disbursements.get(reference)
        if existing is not None:
            if existing.status != "rjct" or existing.item != item:
                self.rejected_duplicates += 1
                decided = _rejected(reference, messages.DUPLICATE_REFERENCE, "this reference_id was received before")
                return _Work(transaction_id, requester, decided=decided)
            # A rejection moved no money: the same disbursement sent again is attempted again.
            existing.transaction_id, existing.requester = transaction_id, requester
            existing.status, existing.reason_code, existing.reason_message = "pdng", None, None
            disbursement = existing
        else:
            disbursement = self.disbursements[reference] = Disbursement(item, transaction_id, requester)
        invalid = _invalid(item)
        if invalid is not None:
            self._reject(disbursement, *invalid)
        return _Work(transaction_id, requester, disbursement)

    def process(self, disbursement: Disbursement, decline: tuple[str, str] | None) -> dict[str, Any] | None:
        """Pay it, or reject it with `decline`; None if it was decided meanwhile (nothing to report anew)."""
        if disbursement.status == "rjct" and disbursement.reason_code is not None:
            return disbursement.status_item()
        if disbursement.status != "pdng":
            return None
        if decline is not None:
            self._reject(disbursement, *decline)
            return disbursement.status_item()
        item = disbursement.item
        currency = item.currency_code or ""
        disbursement.payments += 1
        if disbursement.payments == 2:
            self.paid_more_than_once += 1
        disbursement.status = "succ"
        disbursement.timestamp = messages.now_text()
        self.disbursed += 1
        self.issued_minor[currency] += messages.amount_minor(item.amount, currency) or 0
        return disbursement.status_item()

    def statuses(self, references: list[str]) -> dict[str | None, list[dict[str, Any]]]:
        """The current status of each reference, by the transaction it was disbursed under (None: unknown)."""
        self.status_requests += 1
        self.status_references_asked += len(references)
        found: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
        for reference in dict.fromkeys(references):
            disbursement = self.disbursements.get(reference)
            if disbursement is None:
                found[None].append(
                    _rejected(reference, "rjct.reference_id.invalid", "no disbursement has this reference")
                )
            else:
                found[disbursement.transaction_id].append(disbursement.status_item())
        return found

    def references_of(self, transaction_id: str) -> list[str]:
        return [ref for ref, d in self.disbursements.items() if d.transaction_id == transaction_id]

    def counters(self, *, per_key: bool) -> dict[str, Any]:
        counters: dict[str, Any] = {
            "disburse_requests": self.disburse_requests,
            "disbursement_items_received": self.items_received,
            "distinct_references": len(self.received_per_reference),
            "references_received_more_than_once": self.repeated_references,
            "disbursed": self.disbursed,
            "distinct_references_disbursed": sum(1 for d in self.disbursements.values() if d.payments),
            "paid_more_than_once": self.paid_more_than_once,
            "rejected": self.rejected,
            "rejected_duplicates": self.rejected_duplicates,
            "status_requests": self.status_requests,
            "status_references_asked": self.status_references_asked,
            "issued_minor": dict(self.issued_minor),
        }
        if per_key:
            counters["received_per_reference"] = dict(self.received_per_reference)
            counters["payments_per_reference"] = {ref: d.payments for ref, d in self.disbursements.items()}
        return counters

    def _reject(self, disbursement: Disbursement, code: str, message: str) -> None:
        disbursement.status, disbursement.reason_code, disbursement.reason_message = "rjct", code, message
        disbursement.timestamp = messages.now_text()
        self.rejected += 1


def _invalid(item: DisbursementIn) -> tuple[str, str] | None:
    """Per-disbursement checks: a bad one is rejected alone, the rest of its request goes on."""
    if not item.currency_code:
        return "rjct.currency_code.invalid", "currency_code is required"
    try:
        messages.amount_minor("0.00", item.currency_code)
    except ValueError:
        return "rjct.currency_code.invalid", "not an ISO 4217 currency"
    if messages.amount_minor(item.amount, item.currency_code) is None:
        return "rjct.amount.invalid", "not a positive amount in whole minor units"
    if not _PAYEE_FA.match(item.payee_fa):
        return "rjct.payee_fa.invalid", "not a financial address"
    return None


def _g2p_signer(signer: Signer) -> Sign:
    """Signs each attempt anew, so a redelivery long after the first attempt is still within its validity."""

    def sign(_: str, content: Any) -> tuple[dict[str, str], bytes]:
        header, message = content
        body = json.dumps(signer.signed(header, message), separators=(",", ":")).encode()
        return {"Content-Type": "application/json"}, body

    return sign


class G2PSimulator(FaultyProvider):
    """One G2P Connect provider: its books, faults, processing queue and its two callback dispatchers."""

    def __init__(self, options: SimulatorOptions) -> None:
        super().__init__(options)
        assert options.g2p_signing_key is not None, "checked by SimulatorOptions"
        assert options.g2p_client_public_key is not None, "checked by SimulatorOptions"
        self.signer = Signer(private_key(options.g2p_signing_key), options.g2p_id)
        self.verifier = verifier([options.g2p_client_public_key])
        self.books = G2PBooks()
        self.received: deque[dict[str, Any]] = deque(maxlen=_KEPT_MESSAGES)
        self.sent: deque[dict[str, Any]] = deque(maxlen=_KEPT_MESSAGES)
        base = options.webhook_url.rstrip("/")
        self.dispatchers = {
            path: WebhookDispatcher(
                f"{base}/{path}",
                _g2p_signer(self.signer),
                concurrency=max(1, options.delivery_concurrency // 2),
                max_attempts=options.delivery_max_attempts,
                timeout=options.delivery_timeout_seconds,
                faults=lambda: self.faults,
                rng=self.rng,
            )
            for path in ("on-disburse", "txn/on-status")
        }
        self._processing: asyncio.Queue[_Work] = asyncio.Queue()
        self._processor: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for dispatcher in self.dispatchers.values():
            dispatcher.start()
        self._processor = asyncio.create_task(self._process_forever())

    async def stop(self) -> None:
        if self._processor is not None:
            self._processor.cancel()
            await asyncio.gather(self._processor, return_exceptions=True)
        for dispatcher in self.dispatchers.values():
            await dispatcher.stop()

    def verified(self, payload: object, actions: tuple[str, ...]) -> tuple[RequestHeader, Any]:
        """The request's header (checked) and message, once its signature verifies."""
        if not isinstance(payload, dict) or not isinstance(payload.get("header"), dict):
            raise Fault(400, "err.request.bad", "the body must be an object with a header")
        try:
            self.verifier.verify(payload.get("signature"), payload["header"], payload.get("message"))
        except SignatureError as exc:
            code = "err.signature.missing" if not payload.get("signature") else "err.signature.invalid"
            raise Fault(401, code, str(exc)) from None
        header = _model(RequestHeader, payload["header"])
        if header.action not in actions:
            raise Fault(400, "err.request.bad", f"header.action must be {' or '.join(actions)}")
        if header.receiver_id not in (None, self.options.g2p_id):
            raise Fault(400, "err.receiver_id.invalid", f"this provider is {self.options.g2p_id}")
        return header, payload.get("message")

    def disburse(self, header: RequestHeader, request: DisburseRequest) -> dict[str, Any]:
        if header.total_count != len(request.disbursements):
            raise Fault(400, "err.request.bad", "header.total_count must count the disbursements")
        self.books.disburse_requests += 1
        for item in request.disbursements:
            self._processing.put_nowait(self.books.receive(request.transaction_id, header.sender_id, item))
        return messages.ack(request.transaction_id)

    def status_request(
        self, header: RequestHeader, request: TxnStatusRequest
    ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """The answers to a status request: one (header, message) per transaction its references belong to."""
        query = request.txnstatus_request
        value = query.attribute_value
        if query.attribute_type == "transaction_id":
            references = self.books.references_of(value if isinstance(value, str) else value[0])
        else:
            references = value if isinstance(value, list) else [value]
        correlation_id = str(uuid.uuid4())
        answers = []
        for transaction_id, items in self.books.statuses(references).items():
            for start in range(0, len(items), self.options.callback_max_items):
                part = items[start : start + self.options.callback_max_items]
                message = {
                    "transaction_id": request.transaction_id,
                    "correlation_id": correlation_id,
                    "txnstatus_response": {
                        "txn_type": "on-disburse",
                        "txn_status": {
                            "transaction_id": transaction_id or request.transaction_id,
                            "disbursements_status": part,
                        },
                    },
                }
                answers.append((self._callback_header("on-disburse", header.sender_id, part), message))
        return answers

    def send(self, path: str, header: dict[str, Any], message: dict[str, Any]) -> None:
        self.sent.append({"path": path, "body": self.signer.signed(header, message)})
        self.dispatchers[path].send(header["message_id"], (header, message))

    def counters(self, *, per_key: bool) -> dict[str, Any]:
        deliveries = [dispatcher.counters for dispatcher in self.dispatchers.values()]
        return {
            **self.books.counters(per_key=per_key),
            "instructions_pending": self._processing.qsize(),
            "webhooks_emitted": sum(d.emitted for d in deliveries),
            "webhooks_sent": sum(d.sent for d in deliveries),
            "webhooks_duplicated": sum(d.duplicated for d in deliveries),
            "webhooks_dropped": sum(d.dropped for d in deliveries),
            "webhook_attempts_failed": sum(d.failed_attempts for d in deliveries),
            "webhooks_abandoned": sum(d.abandoned for d in deliveries),
            "webhooks_pending": sum(dispatcher.pending for dispatcher in self.dispatchers.values()),
        }

    def reset(self) -> None:
        self.books = G2PBooks()
        self.received.clear()
        self.sent.clear()
        for dispatcher in self.dispatchers.values():
            dispatcher.counters = DeliveryCounters()
        self.end_outage()

    def _callback_header(self, action: str, receiver: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        return messages.callback_header(
            action,
            status="succ",
            sender_id=self.options.g2p_id,
            receiver_id=receiver,
            total_count=len(items),
            completed_count=sum(item["status"] in ("succ", "rjct") for item in items),
        )

    async def _process_forever(self) -> None:
        while True:
            batch = [await self._processing.get()]
            while len(batch) < _PROCESSING_BATCH and not self._processing.empty():
                batch.append(self._processing.get_nowait())
            decline_rate = self.faults.decline_rate
            done: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
            for work in batch:
                outcome = work.decided
                if work.disbursement is not None:
                    decline = self.rng.choice(_DECLINES) if decline_rate and self.rng.random() < decline_rate else None
                    outcome = self.books.process(work.disbursement, decline)
                if outcome is not None:
                    done[(work.transaction_id, work.requester)].append(outcome)
            limit = self.options.callback_max_items
            for (transaction_id, requester), items in done.items():
                for start in range(0, len(items), limit):
                    part = items[start : start + limit]
                    message = {"transaction_id": transaction_id, "disbursements_status": part}
                    self.send("on-disburse", self._callback_header("on-disburse", requester, part), message)
            await asyncio.sleep(0)


def _model(model: type[_M], value: object) -> _M:
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(part) for part in error["loc"]) for error in exc.errors())
        raise Fault(400, "err.request.bad", f"invalid fields: {fields}") from None


def _errors(status_code: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """`HttpErrorResponse`."""
    return JSONResponse({"errors": [{"code": code, "message": message}]}, status_code=status_code, headers=headers)


def create_app(options: SimulatorOptions) -> FastAPI:
    simulator = G2PSimulator(options)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await simulator.start()
        try:
            yield
        finally:
            await simulator.stop()

    app = FastAPI(title="CBI provider simulator (G2P Connect Disburse)", lifespan=lifespan)
    app.state.simulator = simulator

    @app.exception_handler(Fault)
    async def _on_fault(_: Request, exc: Fault) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return _errors(exc.status_code, exc.code, exc.message, headers)

    @app.exception_handler(InvalidAdminRequest)
    async def _on_invalid_admin(_: Request, exc: InvalidAdminRequest) -> JSONResponse:
        return _errors(422, "err.request.bad", exc.message)

    async def read(request: Request, authorization: str | None, actions: tuple[str, ...]) -> tuple[RequestHeader, Any]:
        if options.api_key is not None:
            expected = f"Bearer {options.api_key}".encode()
            if authorization is None or not hmac.compare_digest(authorization.encode(), expected):
                raise Fault(401, "err.request.unauthorized", "missing or wrong bearer token")
        await simulator.before_call(unavailable="err.service.unavailable")
        try:
            payload = json.loads(await request.body())
        except ValueError:
            raise Fault(400, "err.request.bad", "the body is not JSON") from None
        simulator.received.append({"path": request.url.path, "body": payload})
        return simulator.verified(payload, actions)

    @app.post("/disburse")
    async def disburse(request: Request, authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        header, message = await read(request, authorization, ("disburse",))
        answer = simulator.disburse(header, _model(DisburseRequest, message))
        await simulator.after_call()
        return answer

    @app.post("/disburse/txn/status")
    async def txn_status(request: Request, authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        header, message = await read(request, authorization, _STATUS_ACTIONS["/disburse/txn/status"])
        status = _model(TxnStatusRequest, message)
        for answer in simulator.status_request(header, status):
            simulator.send("txn/on-status", *answer)
        await simulator.after_call()
        return messages.ack(status.transaction_id)

    @app.post("/disburse/sync/txn/status")
    async def sync_txn_status(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        header, message = await read(request, authorization, _STATUS_ACTIONS["/disburse/sync/txn/status"])
        answers = simulator.status_request(header, _model(TxnStatusRequest, message))
        callback_header, answer = answers[0]
        callback_header["action"] = "on-search"  # the one the published sync schema allows
        await simulator.after_call()
        return simulator.signer.signed(callback_header, answer)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    admin = admin_router(simulator)

    @admin.get("/messages")
    async def recent_messages() -> dict[str, list[dict[str, Any]]]:
        """The latest requests received and callbacks sent (each once, however often it is delivered), as
        `{"path", "body"}`."""
        return {"received": list(simulator.received), "sent": list(simulator.sent)}

    app.include_router(admin)
    return app
