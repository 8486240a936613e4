"""Every route × every role: 401 without a valid key, 403 without the role, admitted otherwise."""

from __future__ import annotations

import uuid

import pytest

from cbi_service.app import create_app
from cbi_service.kit.settings import Settings
from tests.auth.support import (
    ALL,
    CONSOLE_MATRIX,
    CONSOLE_PUBLIC_ROUTES,
    MATRIX,
    PUBLIC_ROUTES,
    ROLES,
    SIGNATURE_ROUTES,
)
from tests.merchants.support import merchant_key, paper_voucher_merchant


def _api_routes() -> set[tuple[str, str]]:
    spec = create_app(Settings(database_url=None, run_worker=False)).openapi()
    return {
        (method.upper(), path)
        for path, operations in spec["paths"].items()
        if path.startswith("/v1")
        for method in operations
    }


def test_every_route_is_in_the_matrix():
    missing = _api_routes() - set(MATRIX) - SIGNATURE_ROUTES - PUBLIC_ROUTES
    assert not missing, f"routes without an authorization row: {sorted(missing)}"
    stale = set(MATRIX) - _api_routes()
    assert not stale, f"matrix rows for routes that do not exist: {sorted(stale)}"


def _concrete(path: str) -> str:
    parts = [str(uuid.uuid4()) if p.startswith("{") else p for p in path.split("/")]
    return "/".join(parts)


@pytest.mark.parametrize(("method", "path"), sorted(PUBLIC_ROUTES))
async def test_public_route_needs_no_key(client, method, path):
    response = await client.request(method, path)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("method", "path"), sorted(MATRIX))
async def test_route_requires_a_key(client, method, path):
    response = await client.request(method, _concrete(path), json={})
    assert response.status_code == 401, response.text


@pytest.mark.parametrize(("method", "path"), sorted(MATRIX))
async def test_route_admits_exactly_its_roles(client, api_key_factory, method, path):
    url = _concrete(path)
    merchant = await paper_voucher_merchant(client, api_key_factory)
    for role in sorted(ROLES):
        key = await merchant_key(api_key_factory, merchant["id"]) if role == "merchant" else await api_key_factory(role)
        headers = key | {"Idempotency-Key": str(uuid.uuid4())}
        response = await client.request(method, url, json={}, headers=headers)
        if role in MATRIX[(method, path)]:
            # Admitted: the request reaches the route, which answers it (a 4xx for this empty body is fine,
            # a 5xx is not an answer).
            assert response.status_code not in {401, 403}, (role, response.text)
            assert response.status_code < 500, (role, response.status_code, response.text)
        else:
            assert response.status_code == 403, (role, response.status_code, response.text)
            problem = response.json()
            assert set(problem["allowed_roles"]) == MATRIX[(method, path)], problem
            assert all(allowed in problem["detail"] for allowed in problem["allowed_roles"])


def _console_routes() -> set[tuple[str, str]]:
    from fastapi.routing import APIRoute

    from cbi_service.console.router import router

    return {(method, r.path) for r in router.routes if isinstance(r, APIRoute) for method in r.methods}


def test_every_console_route_is_in_the_console_matrix():
    routes = _console_routes()
    missing = routes - set(CONSOLE_MATRIX) - CONSOLE_PUBLIC_ROUTES
    assert not missing, f"console routes without an authorization row: {sorted(missing)}"
    stale = (set(CONSOLE_MATRIX) | CONSOLE_PUBLIC_ROUTES) - routes
    assert not stale, f"console rows for routes that do not exist: {sorted(stale)}"


async def test_console_routes_send_the_signed_out_to_sign_in(client):
    for method, path in sorted(CONSOLE_MATRIX):
        response = await client.request(method, _concrete(path), data={})
        assert response.status_code == 303, (method, path, response.status_code, response.text)
        assert response.headers["location"].startswith("/console/sign-in?next="), (method, path)


async def test_console_routes_admit_exactly_their_roles(app, client, api_key_factory):
    """One signed-in browser per role over every console route: admitted, the page answers (a 4xx for a
    made-up id or an empty form is an answer); refused, a 403 page naming the roles that would be admitted."""
    from tests.console.support import console_client, csrf_of, sign_in

    failures = []
    for role in sorted(ALL):
        async with console_client(app) as browser:
            token = await sign_in(browser, await api_key_factory(role))
            for (method, path), allowed in sorted(CONSOLE_MATRIX.items()):
                response = await browser.request(method, _concrete(path), data={"csrf_token": token})
                if role in allowed:
                    signed_out = response.headers.get("location", "").startswith("/console/sign-in")
                    if signed_out or response.status_code == 403 or response.status_code >= 500:
                        failures.append((role, method, path, response.status_code))
                elif response.status_code != 403 or not all(f"<code>{r}</code>" in response.text for r in allowed):
                    failures.append((role, method, path, response.status_code))
    assert not failures, failures
    merchant = await paper_voucher_merchant(client, api_key_factory)
    async with console_client(app) as browser:
        page = await browser.get("/console/sign-in")
        key = (await merchant_key(api_key_factory, merchant["id"]))["Authorization"].removeprefix("Bearer ")
        refused = await browser.post("/console/sign-in", data={"csrf_token": csrf_of(page.text), "api_key": key})
        assert refused.status_code == 401  # a merchant's key has no console
