"""One error base carrying its HTTP status; one place renders every error as RFC 9457 problem+json."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cbi_service.kit.outage import RETRY_AFTER_SECONDS, OutageLog, unavailable_kind
from cbi_service.kit.redaction import redact, redact_text
from cbi_service.kit.routing import allowed_methods

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://cbi-service.org/problems/"

log = structlog.get_logger(__name__)
outage_log = OutageLog("database_unavailable")


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details, as every error is rendered."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None
    #: On a 403 for want of a role: the roles that would be admitted.
    allowed_roles: list[str] | None = None


VALIDATION_FAILED = (
    "Validation failed; `errors` names each field. Besides what the schema states, these are refused: text "
    "with a NUL character or an unpaired surrogate; digits other than ASCII 0-9 in an amount, or an amount "
    "without exactly its currency's ISO 4217 minor-unit digits, or in a currency other than the programme's; "
    "a timestamp or date that is not RFC 3339; a `cursor` this API did not hand out; a phone number that "
    "cannot be dialled; a provider that is not configured; an `Idempotency-Key` reused with a different body."
)


def _problem_response(description: str) -> dict[str, Any]:
    return {
        "model": Problem,
        "description": description,
        "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: _problem_response(description)
    for status, description in {
        400: "Malformed request",
        401: "Missing or invalid API key",
        403: "The API key lacks a role for this operation (`allowed_roles` names those that would be admitted), "
        "or the caller may not act on this resource (maker-checker)",
        404: "Not found",
        409: "Conflict with the resource's current state, or a request with this Idempotency-Key in flight",
        422: VALIDATION_FAILED,
        500: "Unexpected error (nothing internal is revealed)",
    }.items()
}

_PROBLEM_CONTENT = {
    media: {"schema": {"$ref": "#/components/schemas/Problem"}} for media in ("application/json", PROBLEM_JSON)
}
#: Documented by `document_problems` only on the operations where they can happen.
BODY_TOO_LARGE = {"description": "The request body is larger than this operation accepts", "content": _PROBLEM_CONTENT}
DATABASE_UNAVAILABLE = {
    "description": "The database is unreachable for now; retry after `Retry-After` seconds",
    "headers": {"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}},
    "content": _PROBLEM_CONTENT,
}


def document_problems(spec: dict[str, Any], *, without_database: frozenset[str]) -> dict[str, Any]:
    """Add 413 to every operation taking a body and 503 to every one that needs the database (all paths but
    `without_database`), keeping any an operation documents itself."""
    for path, item in spec.get("paths", {}).items():
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            if "requestBody" in operation:
                responses.setdefault("413", BODY_TOO_LARGE)
            if path not in without_database:
                responses.setdefault("503", DATABASE_UNAVAILABLE)
    return spec


class AppError(Exception):
    """Base of every error a client may see; subclasses fix the status and problem type."""

    status: int = 500
    title: str = "Internal Server Error"
    slug: str = "internal"

    def __init__(self, detail: str | None = None, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra or {}

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug


class BadRequest(AppError):
    status, title, slug = 400, "Bad Request", "bad-request"


class Unauthorized(AppError):
    status, title, slug = 401, "Unauthorized", "unauthorized"


class Forbidden(AppError):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(AppError):
    status, title, slug = 404, "Not Found", "not-found"


class Conflict(AppError):
    status, title, slug = 409, "Conflict", "conflict"


class UnprocessableEntity(AppError):
    status, title, slug = 422, "Unprocessable Entity", "validation"

    def __init__(self, detail: str | None = None, *, errors: Sequence[dict[str, str]] = (), **kw: Any) -> None:
        super().__init__(detail, **kw)
        self.extra.setdefault("errors", list(errors))


# SQLSTATEs that mean "the client sent a value PostgreSQL cannot hold" (NUL bytes, bad encodings, dates or
# numbers out of range): the client's fault, answered as 422 rather than a 500.
UNSTORABLE_VALUE_SQLSTATES = frozenset({"22021", "22P05", "22008", "22003", "22007", "54000"})


def problem_of(exc: AppError) -> JSONResponse:
    """The problem response for an application error, as the handler renders it (and idempotency stores it)."""
    return problem(exc.status, exc.title, exc.detail, exc.type, **exc.extra)


def problem(status: int, title: str, detail: str, type_: str, **extra: Any) -> JSONResponse:
    """The one place a problem body is made: a secret-shaped string in its detail or fields (a validator's
    message quoting what it was given, an exception's text) is hidden there, whatever raised it."""
    body = {
        "type": type_,
        "title": title,
        "status": status,
        "detail": redact_text(detail),
        **redact(extra, by_name=False),
    }
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def unavailable() -> JSONResponse:
    response = problem(
        503,
        "Service Unavailable",
        "The database cannot be reached right now; nothing was changed. Retry later.",
        PROBLEM_BASE + "unavailable",
    )
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def violated_constraint(exc: DBAPIError) -> str | None:
    """The name of the constraint or unique index a failed statement violated, when the driver says."""
    return getattr(getattr(exc.orig, "__cause__", None), "constraint_name", None)


def field_path(loc: Sequence[int | str]) -> str:
    """Render a pydantic location as `documents[0].number`, dropping the `body`/`query` prefix and the
    validator steps pydantic adds inside unions (`function-after[...]`, `tagged-union[...]`), which name
    no field."""
    parts = list(loc)
    if parts and parts[0] in {"body", "query", "path", "header", "cookie"}:
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.endswith("]"):
            out += f".{part}" if out else str(part)
    return out or "body"


#: What pydantic puts before the message of an exception raised in a validator.
_FRAMEWORK_PREFIXES = ("Value error, ", "Assertion failed, ")


def field_message(err: Mapping[str, Any] | ErrorDetails) -> str:
    """The message a client reads: a validator's own words, without pydantic's "Value error, " before them."""
    cause = (err.get("ctx") or {}).get("error")
    if err.get("type") in {"value_error", "assertion_error"} and cause is not None and (text := str(cause)):
        return text
    message = str(err.get("msg") or "invalid")
    for prefix in _FRAMEWORK_PREFIXES:
        message = message.removeprefix(prefix)
    return message


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """A model's validation errors as the problem's `errors` (inputs left out: they may hold personal data)."""
    return [
        {"field": field_path(e["loc"]), "message": field_message(e)}
        for e in exc.errors(include_url=False, include_input=False)
    ]


def _validation_errors(exc: RequestValidationError) -> tuple[int, list[dict[str, str]]]:
    errors = []
    status = 422
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            status = 400
        errors.append({"field": field_path(err.get("loc", ())), "message": field_message(err)})
    return status, errors


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return problem_of(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, errors = _validation_errors(exc)
        if status == 400:
            return problem(400, "Bad Request", "The request body is not valid JSON.", PROBLEM_BASE + "malformed")
        return problem(
            422,
            "Unprocessable Entity",
            "The request is not valid.",
            PROBLEM_BASE + "validation",
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        titles = {
            400: "Bad Request",
            401: "Unauthorized",
            404: "Not Found",
            405: "Method Not Allowed",
            413: "Content Too Large",
        }
        title = titles.get(exc.status_code, "Error")
        detail = exc.detail if isinstance(exc.detail, str) else title
        response = problem(exc.status_code, title, detail, PROBLEM_BASE + title.lower().replace(" ", "-"))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        if exc.status_code == 405:
            response.headers["Allow"] = ", ".join(allowed_methods(request))
        return response

    @app.exception_handler(DBAPIError)
    async def _database(_: Request, exc: DBAPIError) -> JSONResponse:
        if kind := unavailable_kind(exc):
            outage_log.failure(kind)
            return unavailable()
        if getattr(exc.orig, "sqlstate", None) in UNSTORABLE_VALUE_SQLSTATES:
            return problem(
                422,
                "Unprocessable Entity",
                "The request contains a value that cannot be stored (for example a NUL character).",
                PROBLEM_BASE + "validation",
                errors=[],
            )
        # asyncpg's message carries the row's DETAIL (which may hold PII): log only what identifies the fault.
        orig = exc.orig
        log.error(
            "database_error",
            error_type=type(orig).__name__,
            sqlstate=getattr(orig, "sqlstate", None),
            constraint=violated_constraint(exc),
            table=getattr(getattr(orig, "__cause__", None), "table_name", None),
        )
        return _server_error()

    app.add_middleware(LastResortMiddleware)


class LastResortMiddleware:
    """Answers what no handler took: 503 for a database outage (any driver or socket error), else 500.

    Starlette's handler for `Exception` re-raises after answering, so the server logged every such error
    a second time with its traceback; here it is logged once (an outage in one rate-limited line) and
    not re-raised. A response already under way cannot be replaced: it is cut short, and the server
    closes the connection.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if kind := unavailable_kind(exc):
                outage_log.failure(kind)
                response = unavailable()
            else:
                log.error("unhandled_error", error_type=type(exc).__name__, exc_info=exc)
                response = _server_error()
            if not started:
                await response(scope, receive, send)


def _server_error() -> JSONResponse:
    return problem(500, "Internal Server Error", "An unexpected error occurred.", PROBLEM_BASE + "internal")
