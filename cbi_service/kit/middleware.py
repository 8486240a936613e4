"""Pure-ASGI middleware: request id binding and Prometheus request metrics (cheaper than BaseHTTPMiddleware).

Requests are labelled by the template of the route that answered (`/v1/payment-batches/{batch_id}`), never by
the path asked for, and a path no route matches by `UNMATCHED`; a method outside HTTP's own by `OTHER_METHOD`:
no label holds what a client typed, so the label set stays small and holds no ids (nor secrets).
"""

from __future__ import annotations

import re
import time

import structlog
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cbi_service.kit.ids import new_id

REQUEST_ID_HEADER = b"x-request-id"
UNMATCHED = "unmatched"
OTHER_METHOD = "other"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"})
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")

REQUESTS = Counter("cbi_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "cbi_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class RequestContextMiddleware:
    """Accepts a well-formed incoming X-Request-ID (or makes one), binds it to logs and echoes it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(REQUEST_ID_HEADER, b"").decode("latin-1")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else str(new_id())
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (REQUEST_ID_HEADER, request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            template = route_template(scope)
            method = scope["method"] if scope["method"] in _METHODS else OTHER_METHOD
            REQUESTS.labels(method, template, str(status)).inc()
            LATENCY.labels(method, template).observe(time.perf_counter() - started)


def route_template(scope: Scope) -> str:
    """The matched route's template. API routes leave themselves in the scope; the others (the docs pages,
    the mounted static files) leave only their endpoint, which is looked up among the app's routes."""
    route = scope.get("route")
    if route is None and (endpoint := scope.get("endpoint")) is not None:
        app = scope.get("app")
        route = next(
            (r for r in getattr(app, "routes", ()) if getattr(r, "endpoint", getattr(r, "app", None)) is endpoint),
            None,
        )
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) and template else UNMATCHED
