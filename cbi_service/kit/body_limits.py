"""Request bodies are bounded as they stream in, and a request that needs an API key but carries none is
refused before a byte of its body is read.

The check runs when the route first reads its body, so routing has happened: unknown paths and methods
still answer 404/405, and a route that reads no body costs nothing. A GET or HEAD has no body to read: what
it receives is at most the client leaving (a file or a stream being sent listens for that), so it is only
counted against the default limit, never refused for a missing key (its route's dependencies do that).
A declared `Content-Length` over the
route's limit is refused at once; a chunked body is counted and cut off when it passes the limit. Either
way the answer is a problem (413 or 401) raised as an HTTPException, which FastAPI lets through from its
body parsing to the one error handler, and the connection is closed rather than drained.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# RFC 6750 b64token after the scheme; what a key is worth is for the auth dependency to decide.
_BEARER = re.compile(r"bearer +[A-Za-z0-9\-._~+/]{1,512}=*", re.IGNORECASE)
_CLOSE = {"Connection": "close"}
_BODILESS_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """Byte limits by route path template (`default` for the others), and the routes that authenticate by
    signature instead of an API key."""

    default: int
    by_route: Mapping[str, int] = field(default_factory=dict)
    signed_routes: frozenset[str] = frozenset()


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"The request body exceeds this route's limit of {limit} bytes.", headers=_CLOSE)


class BodyGuardMiddleware:
    def __init__(self, app: ASGIApp, limits: BodyLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit: int | None = None
        received = 0

        async def guarded_receive() -> Message:
            nonlocal limit, received
            if limit is None:
                limit = self.limits.default if scope["method"] in _BODILESS_METHODS else self._admit(scope)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(limit)
            return message

        await self.app(scope, guarded_receive, send)

    def _admit(self, scope: Scope) -> int:
        """The matched route's limit, once its caller and declared size pass; raises the refusal otherwise."""
        headers = Headers(scope=scope)
        template = getattr(scope.get("route"), "path", None)
        if template not in self.limits.signed_routes and not _BEARER.fullmatch(headers.get("authorization", "")):
            raise HTTPException(401, "A valid API key is required.", headers=_CLOSE)
        limit = self.limits.by_route.get(template or "", self.limits.default)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        return limit
