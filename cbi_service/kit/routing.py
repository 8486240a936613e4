"""The route class of every API router: text a client sends must be text PostgreSQL can store.

PostgreSQL's `text` and `jsonb` hold neither NUL (U+0000) nor lone UTF-16 surrogates (U+D800..U+DFFF), which
JSON (`"\\u0000"`, `"\\ud800"`) and percent-encoding (`%00`) both let a client send. Refusing them here, once
for every route, field and parameter, answers a 422 naming the field before any of it reaches the ledger, a
query or a log, instead of each code path discovering it as a driver or ledger error.
"""

from __future__ import annotations

import email.message
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

#: The methods `allowed_methods` tries; an API route never answers any other.
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

NUL_MESSAGE = "must not contain the NUL character (U+0000)"
SURROGATE_MESSAGE = "must be valid Unicode text (no unpaired surrogate code points)"


def unstorable_reason(text: str) -> str | None:
    """Why PostgreSQL cannot store `text`, or None when it can."""
    if "\x00" in text:
        return NUL_MESSAGE
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return SURROGATE_MESSAGE
    return None


def unstorable_strings(value: Any, loc: tuple[str | int, ...]) -> Iterator[dict[str, Any]]:
    """A validation error for every string (object keys included) inside a decoded JSON value."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, loc)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            reason = unstorable_reason(item)
            if reason:
                yield {"type": "string_unstorable", "loc": where, "msg": reason, "input": None}
        elif isinstance(item, dict):
            for key, child in item.items():
                key_text = str(key)
                reason = unstorable_reason(key_text)
                if reason:
                    yield {"type": "string_unstorable", "loc": where, "msg": f"a field name {reason}", "input": None}
                    key_text = "?"
                stack.append((child, (*where, key_text)))
        elif isinstance(item, list):
            stack.extend((child, (*where, index)) for index, child in enumerate(item))


def _is_json(request: Request) -> bool:
    """Whether FastAPI will decode this body as JSON (no content type, or `application/json`, `*+json`)."""
    content_type = request.headers.get("content-type")
    if not content_type:
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


async def _json_body(request: Request) -> Any:
    """The decoded JSON body (cached on the request, so FastAPI decodes it once), or None if there is none."""
    if not _is_json(request):
        return None
    try:
        body = await request.body()
    except StarletteHTTPException:
        raise  # a refusal while the body streams in (413, or 401 before any of it is read)
    except Exception as exc:
        raise HTTPException(status_code=400, detail="There was an error reading the body") from exc
    if not body:
        return None
    try:
        return await request.json()
    except ValueError:
        return None  # malformed JSON: FastAPI answers it with its own 400


async def check_storable_text(request: Request, *, with_body: bool) -> None:
    """Raise a 422 naming every path parameter, query parameter and (`with_body`) JSON body string that
    cannot be stored."""
    errors: list[dict[str, Any]] = []
    for name, value in request.path_params.items():
        errors.extend(unstorable_strings(value, ("path", name)))
    for name, value in request.query_params.multi_items():
        errors.extend(unstorable_strings({name: value}, ("query",)))
    body = await _json_body(request) if with_body else None
    if body is not None:
        errors.extend(unstorable_strings(body, ("body",)))
    if errors:
        raise RequestValidationError(errors)


class StorableTextRoute(APIRoute):
    """An APIRoute that refuses unstorable text (see the module docstring) before validating the request."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        # Only a body FastAPI decodes is checked here; a route reading its own body (webhooks) reads bytes.
        with_body = self.body_field is not None

        async def guarded(request: Request) -> Response:
            await check_storable_text(request, with_body=with_body)
            return await handler(request)

        return guarded


def allowed_methods(request: Request) -> list[str]:
    """Every method some route answers at this request's path (for `Allow`, RFC 9110 §10.2.1).

    Starlette names only the methods of the first route matching the path, and FastAPI makes one route per
    method, so the routes are asked for each method in turn.
    """
    routes = request.app.router.routes
    allowed = []
    for method in HTTP_METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in routes):
            allowed.append(method)
    return allowed
