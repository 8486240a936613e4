"""`POST /v1/g2p-connect/{provider}/on-disburse` and `…/txn/on-status`: G2P Connect callbacks (CONTRACT §15).

A callback message carries the outcomes of many disbursements. Its signature is verified by the provider's
adapter before anything is stored; each outcome that changes an entitlement (`succ`, `rjct`) becomes one
inbox row, stored under the message id and the reference through the same group-committed inbox as webhooks
(`inbox`), and applied by the same worker, exactly once and in the provider's time order whatever order the
messages come in. The provider is answered `ACK` once every row is committed; a redelivered message finds
its rows stored and is answered `ACK` again with no second effect. Authenticated by signature, not API key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from adapters.providers.base import CallbackKind, CallbackProvider, MalformedEvent, UnauthenticCallback
from cbi_service.issuance.providers import get_provider
from cbi_service.kit.errors import BadRequest, NotFound, Unauthorized, UnprocessableEntity
from cbi_service.kit.routing import StorableTextRoute, unstorable_strings
from cbi_service.webhooks import metrics, service
from cbi_service.webhooks.inbox import InboxWriter
from cbi_service.webhooks.schemas import G2PAck, G2PCallbackEnvelope

PREFIX = "/v1/g2p-connect"
PATHS: dict[CallbackKind, str] = {"on-disburse": "/{provider}/on-disburse", "on-status": "/{provider}/txn/on-status"}
ROUTES = frozenset(PREFIX + path for path in PATHS.values())


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The providers that call back with signed messages, built once at startup."""
    settings = app.state.settings
    app.state.callback_providers = {
        name: adapter
        for name in settings.providers
        if isinstance(adapter := get_provider(settings, name), CallbackProvider)
    }
    yield


router = APIRouter(prefix=PREFIX, tags=["webhooks"], lifespan=_lifespan, route_class=StorableTextRoute)


async def receive_callback(provider: str, kind: CallbackKind, request: Request) -> Response:
    adapter: CallbackProvider | None = request.app.state.callback_providers.get(provider)
    if adapter is None:
        raise NotFound("Unknown G2P Connect provider.")
    try:
        payload: Any = json.loads(await request.body())
    except ValueError:
        metrics.REJECTED.labels(provider, metrics.UNKNOWN_TYPE, "malformed").inc()
        raise BadRequest("The body is not valid JSON.") from None
    try:
        callback = adapter.read_callback(payload, kind)
    except UnauthenticCallback as exc:
        metrics.REJECTED.labels(provider, metrics.UNKNOWN_TYPE, "signature").inc()
        raise Unauthorized(f"Callback signature verification failed: {exc}.") from None
    except MalformedEvent as exc:
        metrics.REJECTED.labels(provider, metrics.UNKNOWN_TYPE, "invalid").inc()
        raise UnprocessableEntity("The message is not valid for this provider.", errors=exc.errors) from None
    unstorable = [
        {"field": ".".join(map(str, error["loc"])), "message": error["msg"]}
        for error in unstorable_strings(payload, ())
    ]
    if unstorable:
        metrics.REJECTED.labels(provider, metrics.UNKNOWN_TYPE, "invalid").inc()
        raise UnprocessableEntity("The message holds text that cannot be stored.", errors=unstorable)
    rows = [service.callback_row(provider, callback, item) for item in callback.events]
    writer: InboxWriter = request.app.state.webhook_inbox
    for row, stored in zip(rows, await asyncio.gather(*(writer.store(row) for row in rows)), strict=True):
        (metrics.DUPLICATE if stored.duplicate else metrics.RECEIVED).labels(provider, row.event_type).inc()
    return Response(service.encode_json(callback.acknowledgement), media_type="application/json")


async def on_disburse(provider: str, request: Request) -> Response:
    return await receive_callback(provider, "on-disburse", request)


async def on_status(provider: str, request: Request) -> Response:
    return await receive_callback(provider, "on-status", request)


class _RawCallbackRoute(APIRoute):
    """Calls the endpoint with its path parameter and the request alone: it reads the body itself (as the
    webhook route does), so the signature is checked before anything else is made of it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            response: Response = await endpoint(request.path_params["provider"], request)
            return response

        return handle


_ENDPOINTS: dict[CallbackKind, tuple[Callable[[str, Request], Coroutine[Any, Any, Response]], str]] = {
    "on-disburse": (
        on_disburse,
        "The provider's outcomes of a `disburse` request (G2P Connect Disburse v1.0.0 `on-disburse`). ",
    ),
    "on-status": (
        on_status,
        "The provider's answer to a `disburse/txn/status` request (G2P Connect `txn/on-status`). ",
    ),
}
_COMMON = (
    "Verified before anything is stored (Ed25519 `signature` over `header` and `message`, created within ±5 "
    "minutes, with the provider's `provider_public_key`): 401 otherwise. Each `succ` or `rjct` outcome is stored "
    "in the webhook inbox under the message id and its `reference_id` (the entitlement id) and applied exactly "
    "once, in the provider's time order; `rcvd` and `pdng` change nothing, nor does `rjct.reference_id.duplicate`. "
    "200 with the published `ACK` once stored, also for a redelivered message (no second effect)."
)

for _kind, (_endpoint, _description) in _ENDPOINTS.items():
    router.add_api_route(
        PATHS[_kind],
        _endpoint,
        methods=["POST"],
        route_class_override=_RawCallbackRoute,
        response_model=G2PAck,
        summary=f"Receive a signed G2P Connect {_kind} callback",
        description=_description + _COMMON,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": G2PCallbackEnvelope.model_json_schema()}},
            }
        },
    )
