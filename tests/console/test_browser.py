"""The console in a real browser: Debian's headless Chromium driven by Selenium through Debian's chromedriver
(paths given, so Selenium Manager downloads nothing), against the service served by uvicorn on a free port.

One browser and one server for the module, a handful of page loads per test. Every page visited is checked
for references outside the service (in its markup, and in what the browser actually fetched), and the main
pages are saved as screenshots at desktop and phone width in `artifacts/console/` (git-ignored).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from cbi_service.app import create_app
from cbi_service.auth.roles import Role
from cbi_service.auth.service import create_api_key
from cbi_service.entitlements.service import mark_issued
from cbi_service.kit.db import make_engine, make_session_factory
from cbi_service.kit.settings import Settings, to_asyncpg_url
from tests.beneficiaries.support import person_body
from tests.conftest import TEST_PROVIDERS, _admin, _in_thread, with_database
from tests.support import free_port, programme_body

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "console"
DESKTOP, PHONE = (1280, 900), (390, 844)


# The service, its data and the browser ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def database(server_url: str, template_database: str) -> Iterator[str]:
    name = f"cbi_console_{uuid.uuid4().hex[:12]}"
    _in_thread(asyncio.run, _admin(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'))
    yield to_asyncpg_url(with_database(server_url, name))
    _in_thread(asyncio.run, _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def base_url(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The app served by uvicorn in a thread of its own (the browser's calls block the test's thread)."""
    settings = Settings(
        database_url=database, data_dir=tmp_path_factory.mktemp("data"), env="development", log_format="console",
        log_level="WARNING", run_worker=False, providers=TEST_PROVIDERS,
    )  # fmt: skip
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="console-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the server stopped while starting"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=15)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        # CI (.ci/run) installs them, so there they must run; a developer's machine may lack them.
        missing = "the console's browser tests need Debian's chromium and chromium-driver (apt-get install -y ...)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--no-first-run", "--disable-extensions", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--lang=en-GB"):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    driver.set_window_size(*DESKTOP)
    yield driver
    driver.quit()


@dataclass
class World:
    """Who acts (raw API keys by name) and what they act on, made through the API."""

    keys: dict[str, str]
    pending_batch: str
    own_batch: str
    processing_batch: str
    adjudication: str
    original: str
    maybe: str


async def _make_keys(url: str, people: dict[str, list[Role]]) -> dict[str, str]:
    settings = Settings(database_url=url, run_worker=False)
    engine = make_engine(url, settings)
    try:
        async with make_session_factory(engine).begin() as session:
            return {name: (await create_api_key(session, name, roles))[1] for name, roles in people.items()}
    finally:
        await engine.dispose()


async def _issue(url: str, entitlement_id: uuid.UUID) -> None:
    engine = make_engine(url, Settings(database_url=url, run_worker=False))
    try:
        async with make_session_factory(engine).begin() as session:
            await mark_issued(session, entitlement_id, "card-ref-1", card_token="tok_1", card_last4="4242")
    finally:
        await engine.dispose()


@pytest.fixture(scope="module")
def world(database: str, base_url: str) -> World:
    keys = _in_thread(
        asyncio.run,
        _make_keys(
            database,
            {
                "Olga Oficial": [Role.programme_officer],
                "Ana Aprobadora": [Role.approver],
                "Bruno Aprobador": [Role.approver],
                "Oscar Oficial y Aprobador": [Role.programme_officer, Role.approver],
                "Rita Registradora": [Role.registrar],
                "Raúl Revisor": [Role.registrar],
                "Alba Auditora": [Role.auditor],
                "Fabio Finanzas": [Role.finance],
                "Admin": [Role.admin],
            },
        ),
    )
    with httpx.Client(base_url=base_url, timeout=30) as api:

        def call(who: str, method: str, path: str, body: Any = None) -> Any:
            headers = {"Authorization": f"Bearer {keys[who]}", "Idempotency-Key": str(uuid.uuid4())}
            response = api.request(method, path, json=body, headers=headers)
            assert response.status_code < 300, (path, response.text)
            return response.json()

        programme = call("Admin", "POST", "/v1/programmes", programme_body())["id"]
        funds = {"amount": {"amount": "5000000.00", "currency": "COP"}, "source": "ECHO", "reference": "GRANT-1"}
        call("Fabio Finanzas", "POST", f"/v1/programmes/{programme}/funds", funds)
        people = [
            call("Rita Registradora", "POST", "/v1/beneficiaries", person_body(
                given_names=given, family_names=family, date_of_birth=born, external_ref=None, phone=None,
                documents=[{"type": "passport", "number": passport, "issuing_country": "VE"}],
            ))["id"]
            for given, family, born, passport in (
                ("Luis Alberto", "Chacón Parra", "1975-11-02", "V-10022871"),
                ("Yelitza", "Quintero Salazar", "1993-06-25", "V-21456870"),
            )
        ]  # fmt: skip
        call("Olga Oficial", "POST", f"/v1/programmes/{programme}/enrolments", {"beneficiary_ids": people})

        def batch(officer: str, cycle: str) -> str:
            body = {"programme_id": programme, "name": f"Pago {cycle}", "cycle": cycle,
                    "amount": {"amount": "150000.00", "currency": "COP"}}  # fmt: skip
            made = call(officer, "POST", "/v1/payment-batches", body)["id"]
            call(officer, "POST", f"/v1/payment-batches/{made}/submit")
            return str(made)

        pending, own = batch("Olga Oficial", "2026-12"), batch("Oscar Oficial y Aprobador", "2027-01")
        processing = batch("Olga Oficial", "2026-11")
        for approver in ("Ana Aprobadora", "Bruno Aprobador"):
            call(approver, "POST", f"/v1/payment-batches/{processing}/approvals", {"decision": "approve"})
        call("Fabio Finanzas", "POST", f"/v1/payment-batches/{processing}/release")
        first = call("Alba Auditora", "GET", f"/v1/entitlements?batch_id={processing}")["items"][0]["id"]
        _in_thread(asyncio.run, _issue(database, uuid.UUID(first)))  # as the provider's webhook would
        original = call("Rita Registradora", "POST", "/v1/beneficiaries", person_body())["id"]
        maybe = call("Rita Registradora", "POST", "/v1/beneficiaries",
                     person_body(date_of_birth="1990-03-17", documents=[], phone=None, external_ref=None))  # fmt: skip
        assert maybe["status"] == "pending_adjudication", maybe
        adjudication = call("Raúl Revisor", "GET", "/v1/adjudications?status=open")["items"][0]["id"]
    return World(keys, pending, own, processing, adjudication, original, maybe["id"])


def api(base_url: str, key: str, path: str) -> Any:
    response = httpx.get(base_url + path, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


# What every page is checked for ---------------------------------------------------------------------------------


class _References(HTMLParser):
    ATTRIBUTES = frozenset({"href", "src", "action", "formaction", "srcset", "poster", "data", "xlink:href", "content"})

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        for name, value in attrs:
            if not value or name not in self.ATTRIBUTES:
                continue
            if name == "content" and named.get("http-equiv", "").lower() != "refresh":
                continue  # only a refresh's content names a URL
            self.found.append(value)
        if named.get("style") and "url(" in (named["style"] or ""):
            self.found.append(named["style"] or "")


def assert_local(driver: Any, *, links: bool = True) -> None:
    """Nothing the browser fetched came from elsewhere, and (`links`) nothing on the page points elsewhere."""
    parser = _References()
    parser.feed(driver.page_source if links else "")
    origin = urlsplit(driver.current_url).netloc
    for reference in parser.found:
        parts = urlsplit(reference.split(";url=")[-1].strip())
        assert not parts.netloc or parts.netloc == origin, (driver.current_url, reference)
        assert parts.scheme in {"", "http"} or reference.startswith("data:"), (driver.current_url, reference)
    events = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
    # A request the page's policy blocked never left the browser (ReDoc's logo: see app.REDOC_POLICY).
    blocked = {
        e["params"]["requestId"]
        for e in events
        if e.get("method") == "Network.loadingFailed" and e["params"].get("blockedReason")
    }
    for event in events:
        if event.get("method") == "Network.requestWillBeSent" and event["params"]["requestId"] not in blocked:
            url = event["params"]["request"]["url"]
            fetched = urlsplit(url.removeprefix("blob:"))  # a blob's URL names the origin that made it
            assert url.startswith(("data:", "about:")) or fetched.netloc == origin, url


def screenshot(driver: Any, name: str) -> None:
    """The whole page at desktop and phone width, as PNG files a person looks at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for label, (width, height) in (("desktop", DESKTOP), ("phone", PHONE)):
        driver.set_window_size(width, height)
        full = int(driver.execute_script("return document.documentElement.scrollHeight"))
        driver.set_window_size(width, min(max(height, full + 120), 6000))
        driver.save_screenshot(str(ARTIFACTS / f"{name}-{label}.png"))
        if label == "phone":
            overflow = driver.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 1, f"{name}: the page is wider than a phone by {overflow}px"
    driver.set_window_size(*DESKTOP)


def press(driver: Any, how: str, what: str) -> None:
    """Click a button or link, wait for the page it leads to, and check that page."""
    element = driver.find_element(how, what)
    element.click()
    WebDriverWait(driver, 15).until(expected_conditions.staleness_of(element))
    assert_local(driver)


def sign_in(driver: Any, base_url: str, key: str, then: str = "/console") -> None:
    driver.delete_all_cookies()
    driver.get(f"{base_url}/console/sign-in?next={then}")
    assert_local(driver)
    driver.find_element(By.ID, "api_key").send_keys(key)
    press(driver, By.CSS_SELECTOR, "form.stacked button[type=submit]")
    assert "/sign-in" not in driver.current_url, driver.page_source[:2000]


# The acceptance ---------------------------------------------------------------------------------------------------


def test_an_approver_approves_a_pending_batch_and_the_api_shows_it(browser, base_url, world):
    browser.delete_all_cookies()
    browser.get(f"{base_url}/console/batches")
    assert "/console/sign-in" in browser.current_url  # signed out: sent to sign in
    screenshot(browser, "sign-in")
    sign_in(browser, base_url, world.keys["Ana Aprobadora"], "/console/batches")
    screenshot(browser, "approvals-queue")
    press(browser, By.LINK_TEXT, "Pago 2026-12")
    assert "300,000.00 COP" in browser.page_source
    screenshot(browser, "batch-review")
    browser.find_element(By.ID, "comment").send_keys("Revisado en campo")
    press(browser, By.ID, "approve")
    assert "Your approval is recorded." in browser.page_source
    assert not browser.find_elements(By.ID, "approve")
    batch = api(base_url, world.keys["Alba Auditora"], f"/v1/payment-batches/{world.pending_batch}")
    assert [(a["approver_name"], a["decision"], a["comment"]) for a in batch["approvals"]] == [
        ("Ana Aprobadora", "approve", "Revisado en campo")
    ]
    assert batch["status"] == "pending_approval"  # the programme needs two approvers


def test_the_creator_is_offered_no_approve_button_and_a_forged_approval_is_refused(browser, base_url, world):
    sign_in(browser, base_url, world.keys["Oscar Oficial y Aprobador"], f"/console/batches/{world.own_batch}")
    assert not browser.find_elements(By.ID, "approve")
    assert not browser.find_elements(By.ID, "reject")
    assert "You created this batch" in browser.page_source
    # The visitor builds the approve form the page did not offer, with the session's own CSRF token.
    body = browser.find_element(By.TAG_NAME, "body")
    browser.execute_script(
        """const form = document.createElement('form');
        form.method = 'post'; form.action = arguments[0];
        for (const [name, value] of [['csrf_token', arguments[1]], ['decision', 'approve']]) {
          const input = document.createElement('input'); input.name = name; input.value = value; form.append(input);
        }
        document.body.append(form); form.submit();""",
        f"/console/batches/{world.own_batch}/approvals",
        browser.find_element(By.NAME, "csrf_token").get_attribute("value"),
    )
    WebDriverWait(browser, 15).until(expected_conditions.staleness_of(body))
    assert "Not allowed" in browser.page_source
    assert "cannot approve or reject it" in browser.page_source
    assert_local(browser)
    batch = api(base_url, world.keys["Alba Auditora"], f"/v1/payment-batches/{world.own_batch}")
    assert batch["approvals"] == []
    assert batch["status"] == "pending_approval"


def test_an_auditor_sees_personal_data_masked_and_the_auditors_pages(browser, base_url, world):
    sign_in(browser, base_url, world.keys["Alba Auditora"], f"/console/adjudications/{world.adjudication}")
    page = browser.page_source
    assert "M. J." in page
    assert "R. d. l. C." in page
    assert "María José" not in page
    assert "1990-03-07" not in page
    assert "1990-03-17" not in page
    assert "Personal data is masked for your roles" in page
    assert not browser.find_elements(By.ID, "duplicate")
    assert_local(browser)
    screenshot(browser, "duplicate-masked")
    for path, name in (
        ("/console/programmes", "balances"),
        ("/console/ledger/trial-balance", "trial-balance"),
        ("/console/reports/people-reached?from=2026-01-01&to=2027-12-31", "people-reached"),
        ("/console/audit-events", "audit-trail"),
        ("/console/imports", "imports"),
        ("/console/ledger/verify", "verify"),
    ):
        browser.get(base_url + path)
        assert_local(browser)
        assert browser.find_element(By.TAG_NAME, "h1").text
        screenshot(browser, name)


def test_a_duplicate_is_decided_from_the_side_by_side_page(browser, base_url, world):
    sign_in(browser, base_url, world.keys["Raúl Revisor"], "/console/adjudications")
    press(browser, By.LINK_TEXT, "Compare")
    page = browser.page_source
    assert "María José" in page
    assert "1990-03-07" in page
    assert "1990-03-17" in page
    assert "given_names" in page
    assert "Why they may be the same person" in page
    screenshot(browser, "duplicate-side-by-side")
    browser.find_element(By.ID, "note").send_keys("Misma persona, fecha mal escrita")
    press(browser, By.ID, "duplicate")
    assert "Decided: Duplicate" in browser.page_source
    person = api(base_url, world.keys["Raúl Revisor"], f"/v1/beneficiaries/{world.maybe}")
    assert person["status"] == "duplicate"
    assert person["duplicate_of"] == world.original


def test_a_processing_batch_shows_its_progress_in_spanish_and_the_docs_are_local(browser, base_url, world):
    sign_in(browser, base_url, world.keys["Fabio Finanzas"], f"/console/batches/{world.processing_batch}")
    assert "1 of 2 payments settled" in browser.page_source
    assert browser.find_element(By.CSS_SELECTOR, "meta[http-equiv=refresh]").get_attribute("content") == "5"
    screenshot(browser, "batch-processing")
    browser.get(f"{base_url}/console/batches?status=all")
    press(browser, By.LINK_TEXT, "ES")
    assert "Lotes de pago" in browser.page_source
    screenshot(browser, "batches-spanish")
    for page, drawn in (("/docs", ".swagger-ui .info"), ("/redoc", "a[href='https://redocly.com/redoc/']")):
        browser.get(base_url + page)
        # Drawn from the spec their scripts fetched (ReDoc's footer, with its logo, comes last).
        WebDriverWait(browser, 30).until(lambda driver, drawn=drawn: driver.find_elements(By.CSS_SELECTOR, drawn))
        time.sleep(0.5)
        # What the browser fetched; the pages' own text links to the projects that make them (ReDoc's credit).
        assert_local(browser, links=False)
    stylesheet = httpx.get(f"{base_url}/console/static/console.css", timeout=10).text
    assert "url(" not in stylesheet
    assert "@import" not in stylesheet
