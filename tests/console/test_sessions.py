"""Console sign-in: the key is exchanged for a signed session cookie that never holds it; forms need the
session's CSRF token; a session ends on sign-out (even for a copy of its cookie), after inactivity, and
when its key is revoked."""

from __future__ import annotations

import asyncio

import itsdangerous
from sqlalchemy import select

from cbi_service.audit.models import AuditEvent
from cbi_service.auth.service import revoke_api_key
from cbi_service.console import sessions
from tests.console.support import bearer, console_client, csrf_of, sign_in


async def test_sign_in_sets_a_signed_http_only_strict_cookie_without_the_key(app, api_key_factory, session_factory):
    key = await api_key_factory("approver", name="Aprobadora Uno")
    async with console_client(app) as browser:
        page = await browser.get("/console/sign-in")
        assert page.status_code == 200
        assert page.headers["cache-control"] == "no-store"
        assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none': no script at all
        response = await browser.post(
            "/console/sign-in",
            data={"csrf_token": csrf_of(page.text), "api_key": bearer(key), "next": "/console/batches?status=all"},
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/console/batches?status=all"
        cookie = response.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
        assert "Path=/console" in cookie
        value = browser.cookies[sessions.COOKIE]
        assert bearer(key) not in value
        assert bearer(key)[4:20] not in value
        queue = await browser.get("/console/batches")
        assert queue.status_code == 200
        assert "Aprobadora Uno" in queue.text
    async with session_factory() as session:
        actions = await session.scalars(select(AuditEvent.action).where(AuditEvent.resource_type == "console_session"))
        assert list(actions) == ["console.signed_in"]


async def test_a_wrong_key_or_a_merchant_key_does_not_sign_in(app, api_key_factory):
    async with console_client(app) as browser:
        page = await browser.get("/console/sign-in")
        response = await browser.post(
            "/console/sign-in", data={"csrf_token": csrf_of(page.text), "api_key": "cbi_not-a-key"}
        )
        assert response.status_code == 401
        assert "not valid" in response.text
        assert (await browser.get("/console/batches")).status_code == 303


async def test_sign_in_and_every_form_need_the_sessions_csrf_token(app, api_key_factory):
    key = await api_key_factory("approver")
    async with console_client(app) as browser:
        await browser.get("/console/sign-in")
        forged = await browser.post("/console/sign-in", data={"csrf_token": "x", "api_key": bearer(key)})
        assert forged.status_code == 403
        assert (await browser.get("/console/batches")).status_code == 303  # still signed out
        token = await sign_in(browser, key)
        missing = await browser.post("/console/sign-out", data={})
        assert missing.status_code == 403
        assert (await browser.get("/console/batches")).status_code == 200  # not signed out by a forged form
        assert (await browser.post("/console/sign-out", data={"csrf_token": token})).status_code == 303


async def test_a_token_of_one_session_is_refused_in_another(app, api_key_factory):
    key = await api_key_factory("approver")
    async with console_client(app) as first, console_client(app) as second:
        token = await sign_in(first, key)
        await sign_in(second, key)
        assert (await second.post("/console/sign-out", data={"csrf_token": token})).status_code == 403


async def test_sign_out_ends_the_session_even_for_a_copy_of_its_cookie(app, api_key_factory):
    key = await api_key_factory("auditor")
    async with console_client(app) as browser, console_client(app) as thief:
        token = await sign_in(browser, key)
        thief.cookies.set(sessions.COOKIE, browser.cookies[sessions.COOKIE])
        assert (await thief.get("/console/programmes")).status_code == 200
        out = await browser.post("/console/sign-out", data={"csrf_token": token})
        assert out.status_code == 303
        assert out.headers["location"] == "/console/sign-in"
        assert (await browser.get("/console/programmes")).status_code == 303
        copied = await thief.get("/console/programmes")
        assert copied.status_code == 303
        assert copied.headers["location"].startswith("/console/sign-in?next=")


async def test_a_session_lasts_while_used_and_ends_when_idle(app, api_key_factory, monkeypatch):
    """A request signs the cookie again once it is `REFRESH_AFTER_SECONDS` old, so only idleness ends a
    session; itsdangerous counts whole seconds, so with no idle time allowed a cookie 1 s old is refused."""
    key = await api_key_factory("auditor")
    async with console_client(app) as browser:
        await sign_in(browser, key)
        fresh = await browser.get("/console/programmes")
        assert fresh.status_code == 200
        assert "set-cookie" not in fresh.headers  # just signed: not signed again
        monkeypatch.setattr(sessions, "REFRESH_AFTER_SECONDS", 0)
        used = await browser.get("/console/programmes")
        assert used.status_code == 200
        assert used.headers["set-cookie"].startswith(f"{sessions.COOKIE}=")
        assert "HttpOnly" in used.headers["set-cookie"]
        monkeypatch.setattr(sessions, "IDLE_SECONDS", 0)
        await asyncio.sleep(1.1)
        response = await browser.get("/console/programmes")
        assert response.status_code == 303
        assert response.headers["location"] == "/console/sign-in?next=%2Fconsole%2Fprogrammes"


async def test_a_revoked_key_ends_its_sessions(app, api_key_factory, session_factory):
    key = await api_key_factory("auditor")
    async with console_client(app) as browser:
        await sign_in(browser, key)
        assert (await browser.get("/console/programmes")).status_code == 200
        async with session_factory.begin() as session:
            event = await session.scalar(select(AuditEvent).where(AuditEvent.action == "console.signed_in"))
            assert event is not None
            assert event.actor_id is not None
            assert await revoke_api_key(session, event.actor_id)
        assert (await browser.get("/console/programmes")).status_code == 303


async def test_a_forged_cookie_opens_nothing(app, api_key_factory):
    async with console_client(app) as browser:
        forged = itsdangerous.URLSafeTimedSerializer(b"guessed", salt="cbi-console-session").dumps({"s": "x", "k": "y"})
        browser.cookies.set(sessions.COOKIE, forged)
        assert (await browser.get("/console/programmes")).status_code == 303


async def test_sign_in_goes_back_only_to_console_pages(app, api_key_factory):
    key = await api_key_factory("auditor")
    async with console_client(app) as browser:
        for target in ("https://elsewhere.example/", "//elsewhere.example", "/v1/programmes", "/consolex"):
            page = await browser.get("/console/sign-in")
            response = await browser.post(
                "/console/sign-in", data={"csrf_token": csrf_of(page.text), "api_key": bearer(key), "next": target}
            )
            assert response.headers["location"] == "/console", target
            browser.cookies.clear()


async def test_the_language_follows_the_browser_and_the_switch(app, api_key_factory):
    async with console_client(app) as browser:
        spanish = await browser.get("/console/sign-in", headers={"Accept-Language": "es-CO,es;q=0.9,en;q=0.5"})
        assert 'lang="es"' in spanish.text
        assert "Iniciar sesión en la consola" in spanish.text
        english = await browser.get("/console/sign-in", headers={"Accept-Language": "fr, en;q=0.8"})
        assert "Sign in to the console" in english.text
        switched = await browser.get("/console/language", params={"to": "es", "next": "/console/sign-in"})
        assert switched.status_code == 303
        assert switched.headers["location"] == "/console/sign-in"
        chosen = await browser.get("/console/sign-in", headers={"Accept-Language": "en"})
        assert "Iniciar sesión en la consola" in chosen.text
        assert (await browser.get("/console/language", params={"to": "fr"})).status_code == 422
