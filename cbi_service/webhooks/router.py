"""`POST /v1/webhooks/{provider}` (authenticated by signature, not API key) and the review of stored events."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.providers.base import MalformedEvent, ProviderEvent
from cbi_service.auth.dependencies import require_roles
from cbi_service.auth.roles import Principal, Role
from cbi_service.issuance.providers import get_provider
from cbi_service.kit.db import SessionDep
from cbi_service.kit.errors import BadRequest, NotFound, Unauthorized, UnprocessableEntity
from cbi_service.kit.pagination import Page, PageDep, PageParams, page_of
from cbi_service.kit.routing import StorableTextRoute
from cbi_service.webhooks import metrics, service
from cbi_service.webhooks.inbox import InboxWriter
from cbi_service.webhooks.repository import InboxRow, WebhookRepository
from cbi_service.webhooks.schemas import EventEnvelope, EventStatus, StoredEventOut, WebhookAck
from cbi_service.webhooks.signatures import InvalidSignature, ProviderVerifier, SignedMessage, build_verifiers

MAX_WEBHOOK_ID_LENGTH = 255
_HEADER_DOCS = {
    "webhook-id": "Unique per event; redeliveries reuse it.",
    "webhook-timestamp": "Unix seconds when the request was signed; refused outside ±5 minutes.",
    "webhook-signature": "Space-separated `v1,<base64>` HMAC-SHA256 signatures over `id.timestamp.body`.",
}


@dataclass(frozen=True, slots=True)
class _Endpoint:
    verifier: ProviderVerifier
    parse_event: Callable[[Mapping[str, Any]], ProviderEvent]


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Decode every provider's secrets and build its event parser once, at startup (a bad secret stops the
    service from starting), and run the inbox writer for as long as the app serves."""
    settings = app.state.settings
    verifiers = build_verifiers(settings.providers, production=settings.env == "production")
    app.state.webhook_endpoints = {
        name: _Endpoint(verifier, get_provider(settings, name).parse_event) for name, verifier in verifiers.items()
    }
    writer = InboxWriter(app.state.engine)
    writer.start()
    app.state.webhook_inbox = writer
    try:
        yield
    finally:
        await writer.stop()


router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], lifespan=_lifespan, route_class=StorableTextRoute)
Reviewer = Annotated[Principal, Depends(require_roles(Role.auditor, Role.finance))]


def _inbox_row(provider: str, endpoint: _Endpoint, message: SignedMessage, payload: Any) -> InboxRow:
    """What the inbox keeps of an authentic body; raises `MalformedEvent`.

    A body with a full card number in it is kept for review with the number redacted, before the adapter
    reads it (a PAN in `card_last4` would otherwise be a 422 the provider retries forever), and also when
    the adapter's reading of it holds one.
    """
    card_numbers = service.card_number_fields(payload)
    if card_numbers:
        return service.card_number_row(provider, message, payload, card_numbers)
    event = endpoint.parse_event(payload)
    if service.has_nul(event):
        raise MalformedEvent("NUL character", [{"field": "data", "message": "must not contain U+0000"}])
    card_numbers = service.card_number_fields(payload, event)
    if card_numbers:
        return service.card_number_row(provider, message, payload, card_numbers)
    return service.inbox_row(provider, message, event)


async def receive_webhook(provider: str, request: Request) -> Response:
    """Headers and body are read raw: the signature covers the bytes exactly as received (the body bounded by
    the app's webhook body limit as it streams in)."""
    endpoint: _Endpoint | None = request.app.state.webhook_endpoints.get(provider)
    if endpoint is None:
        raise NotFound("Unknown provider.")
    try:
        message = endpoint.verifier.verify(await request.body(), request.headers)
    except InvalidSignature as exc:
        metrics.REJECTED.labels(provider, metrics.UNKNOWN_TYPE, "signature").inc()
        raise Unauthorized(f"Webhook signature verification failed: {exc}.") from None
    try:
        payload: Any = json.loads(message.body)
    except ValueError:
        metrics.REJECTED.labels(provider, metrics.UNKNOWN_TYPE, "malformed").inc()
        raise BadRequest("The body is not valid JSON.") from None
    event_type = metrics.type_label(payload.get("type") if isinstance(payload, dict) else None)
    try:
        if len(message.webhook_id) > MAX_WEBHOOK_ID_LENGTH:
            raise MalformedEvent(
                "webhook-id too long", [{"field": "webhook-id", "message": f"at most {MAX_WEBHOOK_ID_LENGTH} chars"}]
            )
        row = _inbox_row(provider, endpoint, message, payload)
    except MalformedEvent as exc:
        metrics.REJECTED.labels(provider, event_type, "invalid").inc()
        raise UnprocessableEntity("The event is not valid for this provider.", errors=exc.errors) from None
    writer: InboxWriter = request.app.state.webhook_inbox
    stored = await writer.store(row)
    if stored.duplicate:
        metrics.DUPLICATE.labels(provider, row.event_type).inc()
    elif row.status == "refused":
        metrics.REJECTED.labels(provider, row.event_type, "card_number").inc()
    else:
        metrics.RECEIVED.labels(provider, row.event_type).inc()
    ack = {"id": str(stored.id), "status": stored.status, "duplicate": stored.duplicate}
    status_code = 200 if stored.duplicate else 202
    return Response(service.encode_json(ack), status_code=status_code, media_type="application/json")


class _RawRequestRoute(APIRoute):
    """Calls the endpoint with the request alone: it takes its one path parameter and reads headers and body
    itself, so FastAPI's per-request parameter solving, a fifth of a webhook's cost, is skipped (providers
    send one request per event)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        async def handle(request: Request) -> Response:
            return await receive_webhook(request.path_params["provider"], request)

        return handle


router.add_api_route(
    "/{provider}",
    receive_webhook,
    methods=["POST"],
    route_class_override=_RawRequestRoute,
    status_code=202,
    response_model=WebhookAck,
    summary="Receive a signed provider event",
    description="Standard Webhooks: HMAC-SHA256 over `webhook-id.webhook-timestamp.body` with the provider's "
    "secret, timestamps within ±5 minutes. 202 once the event is durably stored (it is applied shortly after); "
    "200 for a `webhook-id` already stored, with no second effect. An event holding what looks like a full card "
    "number (13–19 digits passing the Luhn check) in its card fields or in a field the contract does not define "
    "is kept for review with the number redacted and never applied: 202 with status `refused`, so the provider "
    "stops resending it (the number is never stored); it is listed under `GET /v1/webhooks/events?status=refused`.",
    responses={200: {"model": WebhookAck, "description": "A redelivery: already stored, nothing done again."}},
    openapi_extra={
        "parameters": [
            {"name": name, "in": "header", "required": True, "description": doc, "schema": {"type": "string"}}
            for name, doc in _HEADER_DOCS.items()
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": EventEnvelope.model_json_schema()}},
        },
    },
)


@router.get("/unmatched", response_model=Page[StoredEventOut])
async def list_unmatched(
    session: SessionDep,
    _: Reviewer,
    page: PageDep,
    provider: Annotated[str | None, Query(max_length=100)] = None,
) -> Page[StoredEventOut]:
    """Authentic events for entitlements the service does not know, oldest first; they are retried automatically."""
    return await _page(session, page, "unmatched", provider)


@router.get("/events", response_model=Page[StoredEventOut])
async def list_events(
    session: SessionDep,
    _: Reviewer,
    page: PageDep,
    status: EventStatus,
    provider: Annotated[str | None, Query(max_length=100)] = None,
) -> Page[StoredEventOut]:
    """Stored events by status, oldest first: `refused` (e.g. a redemption above the voucher's remaining value)
    and `failed` ones need a person to look at them."""
    return await _page(session, page, status.value, provider)


async def _page(session: AsyncSession, page: PageParams, status: str, provider: str | None) -> Page[StoredEventOut]:
    rows = await WebhookRepository(session).list_events(
        status=status, after_id=page.after_id(), limit=page.limit, provider=provider
    )
    items, cursor = page_of(rows, page.limit, lambda event: [event.id])
    return Page(items=[StoredEventOut.of(event) for event in items], next_cursor=cursor)
