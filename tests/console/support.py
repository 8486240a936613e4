"""Signing in to the console as a browser does, for tests that drive it over HTTP without one."""

from __future__ import annotations

import re
from html import unescape

import httpx

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return unescape(found.group(1))


def bearer(headers: dict[str, str]) -> str:
    """The raw key of an `api_key_factory` header."""
    return headers["Authorization"].removeprefix("Bearer ")


async def sign_in(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    """Sign the client in with the key of `headers`; returns the CSRF token of the signed-in session."""
    page = await client.get("/console/sign-in")
    assert page.status_code == 200, page.text
    response = await client.post(
        "/console/sign-in", data={"csrf_token": csrf_of(page.text), "api_key": bearer(headers), "next": "/console"}
    )
    assert response.status_code == 303, response.text
    home = await client.get("/console", follow_redirects=True)
    assert home.status_code == 200, home.text
    return csrf_of(home.text)


SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
#: Attributes that make a browser load or go somewhere (a refresh's `content` among them).
REFERENCE = re.compile(r'\b(?:href|src|action|formaction|srcset|poster|content)="([^"]*)"')


async def _only_local_references(response: httpx.Response) -> None:
    """Every console page the tests see points nowhere but at the service itself."""
    if response.headers.get("content-type", "").startswith("text/html"):
        await response.aread()
        for reference in REFERENCE.findall(response.text):
            target = unescape(reference).split(";url=")[-1].strip()
            elsewhere = target.startswith("//") or (SCHEME.match(target) and not target.startswith("data:"))
            assert not elsewhere, (response.url, reference)


def console_client(app: object) -> httpx.AsyncClient:
    """A client of its own (its own cookies) on the app, as a second browser would be; every page it gets
    is checked for references outside the service."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # type: ignore[arg-type]
    return httpx.AsyncClient(
        transport=transport, base_url="http://testserver", event_hooks={"response": [_only_local_references]}
    )
