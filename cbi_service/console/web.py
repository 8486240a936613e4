"""The console's web plumbing: who is visiting (a dependency per set of roles), pages rendered in the
visitor's language, forms checked for their CSRF token, and errors shown as pages.

Every console route uses `ConsoleRoute`: a domain error (a 403 of maker-checker, a 409 of a batch that has
moved on) reaches it only after the request's unit of work has rolled back, and becomes a page saying what
happened; a visitor who is not signed in is sent to the sign-in page. Every answer carries headers that
keep it out of caches and frames and allow nothing but the service's own assets (no script at all).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import structlog
from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from cbi_service.auth.roles import Principal, Role
from cbi_service.console import i18n, sessions
from cbi_service.console.access import NAVIGATION
from cbi_service.console.i18n import N_
from cbi_service.console.sessions import Visit
from cbi_service.kit.db import SessionDep, roll_back_request
from cbi_service.kit.errors import AppError, Forbidden, UnprocessableEntity, field_path
from cbi_service.kit.routing import StorableTextRoute, unstorable_reason

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
PREFIX = "/console"
SIGN_IN = f"{PREFIX}/sign-in"
CSRF_FIELD = "csrf_token"
MAX_FORM_FIELDS = 16
MAX_FORM_FILES = 1
MAX_FIELD_BYTES = 16 << 10

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def _environment(language: str) -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "svg"]),
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(i18n.translations(language), newstyle=True)  # type: ignore[attr-defined]
    # `_()` marks what it returns as safe markup, which is right for the templates' own strings only: a message
    # that comes from a request (an error quoting what was sent) is translated by this filter, as plain text
    # the page escapes.
    catalogue = i18n.translations(language)
    env.filters["translated"] = lambda message: str(catalogue.gettext(message))
    env.filters["money"] = lambda value: i18n.money(value, language)
    env.filters["number"] = lambda value: i18n.number(value, language)
    env.filters["when"] = lambda value: i18n.when(value, language)
    return env


ENVIRONMENTS = {language: _environment(language) for language in i18n.LANGUAGES}


class SignedOut(Exception):
    """No signed-in visit: the route class answers with the sign-in page."""


@dataclass
class Console:
    """The visit a page is rendered for: who, in which language, with which CSRF token."""

    request: Request
    visit: Visit
    language: str
    csrf: str
    #: The cookie to send back (a new visit, or the same one signed again), if any.
    cookie: str | None = None

    @property
    def principal(self) -> Principal:
        if self.visit.principal is None:
            raise SignedOut
        return self.visit.principal

    def has(self, *roles: Role) -> bool:
        return self.visit.principal is not None and self.visit.principal.has_any(frozenset(roles))

    def gettext(self, message: str) -> str:
        return i18n.translations(self.language).gettext(message)

    def render(self, template: str, http_status: int = 200, **context: Any) -> HTMLResponse:
        env = ENVIRONMENTS[self.language]
        body = env.get_template(template).render(console=self, nav=_nav(self), **context)
        return HTMLResponse(body, status_code=http_status)

    def language_links(self) -> list[tuple[str, str, bool]]:
        """(language, link, current) for the switch; the link comes back to this page (the console's home
        after a form was posted: a page answering a post cannot be asked for again)."""
        url = self.request.url
        here = (url.path + (f"?{url.query}" if url.query else "")) if self.request.method == "GET" else PREFIX
        return [
            (language, f"{PREFIX}/language?{urlencode({'to': language, 'next': here})}", language == self.language)
            for language in i18n.LANGUAGES
        ]

    async def form(self) -> FormData:
        """The posted form, once its CSRF token matches the visit's; text PostgreSQL cannot store is refused."""
        form = await self.request.form(
            max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FIELD_BYTES
        )
        token = form.get(CSRF_FIELD)
        if not isinstance(token, str) or not sessions.same_token(token, self.csrf):
            raise Forbidden(N_("The form has expired or did not come from this console; open the page again."))
        errors = [
            {"field": name, "message": reason}
            for name, value in form.multi_items()
            if isinstance(value, str) and (reason := unstorable_reason(value))
        ]
        if errors:
            raise UnprocessableEntity(N_("The form is not valid."), errors=errors)
        return form


def text_field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None or isinstance(value, UploadFile):
        return None
    return value.strip() or None


def file_field(form: FormData, name: str) -> UploadFile | None:
    value = form.get(name)
    return value if isinstance(value, UploadFile) and value.filename else None


def _nav(console: Console) -> list[tuple[str, str, bool]]:
    """(path, label, current) of the pages this visitor may open."""
    if console.visit.principal is None:
        return []
    path = console.request.url.path
    return [
        (item.path, console.gettext(item.label), path.startswith(item.path))
        for item in NAVIGATION
        if console.visit.principal.has_any(item.roles)
    ]


async def _console(request: Request, session: SessionDep, visit: Visit | None) -> Console:
    language = i18n.choose_language(request.cookies.get(i18n.LANGUAGE_COOKIE), request.headers.get("accept-language"))
    cookie = None
    if visit is None:
        visit = Visit(sid=sessions.new_sid())
        cookie = await sessions.cookie_value(session, visit)
    elif visit.age >= sessions.REFRESH_AFTER_SECONDS:
        cookie = await sessions.cookie_value(session, visit)
    console = Console(request, visit, language, await sessions.csrf_token(session, visit), cookie)
    request.state.console = console
    if visit.principal is not None:
        structlog.contextvars.bind_contextvars(actor_id=str(visit.principal.id))
    return console


async def visitor(request: Request, session: SessionDep) -> Console:
    """Anyone: signed in or not (the sign-in page, the language switch)."""
    return await _console(request, session, await sessions.read_visit(session, request.cookies.get(sessions.COOKIE)))


def staff(*roles: Role) -> Callable[..., Coroutine[Any, Any, Console]]:
    """A signed-in visitor holding one of `roles` (any staff role when none is named); the 403 names them."""
    allowed = frozenset(roles)
    names = [role.value for role in Role if role in allowed]

    async def _check(request: Request, session: SessionDep) -> Console:
        visit = await sessions.read_visit(session, request.cookies.get(sessions.COOKIE))
        if visit is None or visit.principal is None:
            request.state.console = await _console(request, session, None)
            raise SignedOut
        console = await _console(request, session, visit)
        if allowed and not visit.principal.has_any(allowed):
            raise Forbidden(N_("Your roles do not open this page."), extra={"allowed_roles": names})
        return console

    return _check


VisitorDep = Annotated[Console, Depends(visitor)]


def safe_next(target: str | None) -> str:
    """Where to go after signing in or switching language: a console page of this service, nothing else."""
    if target and target.startswith(f"{PREFIX}") and not target.startswith("//") and "\\" not in target:
        rest = target[len(PREFIX) :]
        if rest == "" or rest.startswith(("/", "?")):
            return target
    return PREFIX


def see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def _finish(request: Request, response: Response) -> Response:
    console: Console | None = getattr(request.state, "console", None)
    if console is not None and console.cookie is not None:
        set_session_cookie(request, response, console.cookie)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def set_session_cookie(request: Request, response: Response, value: str) -> None:
    settings = request.app.state.settings
    response.set_cookie(
        sessions.COOKIE,
        value,
        max_age=sessions.MAX_SECONDS,
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" or settings.env == "production",
    )


def _error_page(request: Request, status: int, detail: str, extra: Mapping[str, Any]) -> Response:
    console: Console | None = getattr(request.state, "console", None)
    if console is None:
        language = i18n.choose_language(
            request.cookies.get(i18n.LANGUAGE_COOKIE), request.headers.get("accept-language")
        )
        console = Console(request, Visit(sid=""), language, csrf="")
    errors = list(extra.get("errors") or [])
    return console.render(
        "error.html", http_status=status, status_code=status, detail=detail, errors=errors,
        allowed_roles=list(extra.get("allowed_roles") or []),
    )  # fmt: skip


class ConsoleRoute(StorableTextRoute):
    """Console pages: errors as pages, the signed-out sent to sign in, the session cookie kept fresh."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignedOut:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                response = see_other(f"{SIGN_IN}?next={quote(target, safe='')}")
            # A refusal is answered here as a page, not raised, so the request's unit of work would commit what
            # the service wrote before refusing: it is rolled back first, as the API's error handler has it.
            except AppError as exc:
                await roll_back_request(request)
                response = _error_page(request, exc.status, exc.detail, exc.extra)
            except StarletteHTTPException as exc:  # a body over its limit (413), as it streams in
                await roll_back_request(request)
                detail = exc.detail if isinstance(exc.detail, str) else ""
                response = _error_page(request, exc.status_code, detail, {})
            except RequestValidationError as exc:
                await roll_back_request(request)
                errors = [{"field": field_path(e.get("loc", ())), "message": str(e.get("msg"))} for e in exc.errors()]
                response = _error_page(request, 422, N_("The request is not valid."), {"errors": errors})
            return _finish(request, response)

        return page
