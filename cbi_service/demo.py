"""`cbi-service demo`: whole payment cycles, end to end: prepaid cards against the provider simulator, then
paper vouchers the agency issues itself and pays merchants for.

Everything goes through the real service over real HTTP: the API (with its in-process worker) listens on
a local port, the simulator runs as its own process and sends its signed webhooks back to that API, and a
status poll covers any event that does not arrive. The demo creates its own API keys, programmes, funding
and a few dozen synthetic people, takes a card batch from draft to completed, then issues paper vouchers to
the same people, prints them, redeems some at a shop online and some offline (with a double spend the sync
catches), and settles the shop through maker-checker to a paid pain.001 credit transfer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import secrets
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import uvicorn

from adapters.simulator import SimulatorProcess
from cbi_service.app import create_app
from cbi_service.auth.roles import Role
from cbi_service.auth.service import create_api_key
from cbi_service.kit.bank_accounts import SettlementAccount
from cbi_service.kit.db import make_engine, make_session_factory
from cbi_service.kit.settings import Settings, hidden_secrets

PROVIDER = "demo-cards"
GIVEN = (
    "María José",
    "Luis Alberto",
    "Ana Lucía",
    "José Gregorio",
    "Yohana",
    "Carlos Eduardo",
    "Rosa Elena",
    "Jesús",
    "Daniela",
    "Wilmer",
    "Andreína",
    "Francisco Javier",
    "Yelitza",
    "Pedro Pablo",
    "Carmen Teresa",
    "Johan",
    "Gabriela",
    "Rafael",
    "Mariela",
    "Óscar",
)
FAMILY = (
    "Pérez",
    "González",
    "Rodríguez",
    "Hernández",
    "García",
    "Martínez",
    "López",
    "Díaz",
    "Ramírez",
    "Torres",
    "Castillo",
    "Rojas",
    "Mendoza",
    "Gutiérrez",
    "Morales",
    "Vargas",
    "Chacón",
    "Parra",
    "Quintero",
    "Salazar",
    "Zambrano",
    "Briceño",
)
#: The account the demo pays its merchant from when none is configured: a demonstration account, in
#: Colombia's form (no IBAN there), printed as such; a real deployment sets CBI_SETTLEMENT_ACCOUNT.
DEMO_SETTLEMENT_ACCOUNT = SettlementAccount(
    name="Agencia Humanitaria (demo account)", account_number="000123456789", bank_code="1007"
)
PLACES = (("Norte de Santander", "Cúcuta"), ("La Guajira", "Maicao"), ("Arauca", "Arauca"), ("Bogotá D.C.", "Bogotá"))


def synthetic_people(count: int, seed: int = 2026) -> list[dict[str, Any]]:
    """Registration bodies for distinct, plausible people (names, birth dates and documents all differ)."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not security
    people = []
    for i in range(count):
        admin1, admin2 = rng.choice(PLACES)
        people.append(
            {
                "given_names": rng.choice(GIVEN),
                "family_names": f"{rng.choice(FAMILY)} {rng.choice(FAMILY)}",
                "date_of_birth": date(
                    1950 + rng.randrange(55), 1 + rng.randrange(12), 1 + rng.randrange(28)
                ).isoformat(),
                "sex": rng.choice(("female", "male")),
                "nationality": "VE",
                "documents": [
                    {
                        "type": "passport",
                        "number": f"{120_000_000 + i * 7_919 + rng.randrange(7_000)}",
                        "issuing_country": "VE",
                    }
                ],
                "location": {"country": "CO", "admin1": admin1, "admin2": admin2},
                "household_size": 1 + rng.randrange(7),
                "consent": {"given": True, "date": "2026-11-01", "purpose": "cash assistance"},
            }
        )
    return people


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def _serving(settings: Settings, port: int) -> AsyncIterator[str]:
    """The API with its in-process worker on a local port, for as long as the block runs."""
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def _keys(settings: Settings) -> dict[str, dict[str, str]]:
    assert settings.async_database_url
    engine = make_engine(settings.async_database_url, settings)
    people = {
        "admin": [Role.admin],
        "registrar": [Role.registrar],
        "officer": [Role.programme_officer],
        "approver-a": [Role.approver],
        "approver-b": [Role.approver],
        "finance": [Role.finance],
        "finance-2": [Role.finance],
    }
    headers = {}
    try:
        async with make_session_factory(engine).begin() as session:
            for name, roles in people.items():
                _, raw = await create_api_key(session, f"demo {name}", roles)
                headers[name] = {"Authorization": f"Bearer {raw}"}
    finally:
        await engine.dispose()
    return headers


async def _merchant_key(settings: Settings, merchant_id: str) -> dict[str, str]:
    assert settings.async_database_url
    engine = make_engine(settings.async_database_url, settings)
    try:
        async with make_session_factory(engine).begin() as session:
            _, raw = await create_api_key(session, "demo shop", [Role.merchant], merchant_id=uuid.UUID(merchant_id))
    finally:
        await engine.dispose()
    return {"Authorization": f"Bearer {raw}"}


async def _call(http: httpx.AsyncClient, method: str, path: str, headers: dict[str, str], **kw: Any) -> Any:
    return _ok(await http.request(method, path, headers=headers, **kw))


def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        request = response.request
        raise RuntimeError(f"{request.method} {request.url.path} → {response.status_code}: {response.text}")
    return response.json()


async def run_demo(settings: Settings, people: int, say: Callable[[str], None]) -> None:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    api_port = _free_port()
    simulator = SimulatorProcess.start(f"http://127.0.0.1:{api_port}/v1/webhooks/{PROVIDER}", secret)
    try:
        settings = settings.model_copy(
            update={
                "providers": hidden_secrets(
                    {PROVIDER: {"adapter": "prepaid_card", "base_url": simulator.base_url, "webhook_secret": secret}}
                ),
                "run_worker": True,
                "worker_poll_seconds": 0.2,
                "provider_status_poll_seconds": 5.0,
                "log_level": "WARNING",
                "settlement_account": settings.settlement_account or DEMO_SETTLEMENT_ACCOUNT,
            }
        )
        say(f"provider simulator on {simulator.base_url} (its own process)")
        keys = await _keys(settings)
        async with _serving(settings, api_port) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            say(f"API and worker on {base_url}")
            registered = await _cycle(http, keys, simulator, people, say)
            await _paper_cycle(http, settings, keys, registered, say)
    finally:
        simulator.stop()


async def _cycle(
    http: httpx.AsyncClient,
    keys: dict[str, dict[str, str]],
    simulator: SimulatorProcess,
    people: int,
    say: Callable[[str], None],
) -> list[str]:
    """The card cycle; returns the people it registered and paid."""
    programme = await _call(
        http,
        "POST",
        "/v1/programmes",
        keys["admin"],
        json={
            "name": "Multipurpose cash — Cúcuta (demo)",
            "country": "CO",
            "currency": "COP",
            "sector": "multipurpose_cash",
            "delivery_mechanism": "prepaid_card",
            "provider": PROVIDER,
            "approvals_required": 2,
        },
    )
    pid = programme["id"]
    await _call(
        http,
        "POST",
        f"/v1/programmes/{pid}/funds",
        {**keys["finance"], "Idempotency-Key": f"demo-{pid}"},
        json={
            "amount": {"amount": "50000000.00", "currency": "COP"},
            "source": "Demo donor",
            "reference": "DEMO-GRANT-1",
        },
    )
    say(f"programme {pid} funded with 50,000,000.00 COP")
    registered = []
    statuses: dict[str, int] = {}
    for body in synthetic_people(people, seed=secrets.randbelow(2**32)):
        response = await http.post("/v1/beneficiaries", headers=keys["registrar"], json=body)
        if response.status_code == httpx.codes.CONFLICT:
            statuses["duplicate"] = statuses.get("duplicate", 0) + 1
            continue
        created = _ok(response)
        statuses[created["status"]] = statuses.get(created["status"], 0) + 1
        if created["status"] == "active":
            registered.append(created["id"])
    say(f"registered {people} synthetic people (fresh ones each run): {statuses}")
    await _call(
        http, "POST", f"/v1/programmes/{pid}/enrolments", keys["registrar"], json={"beneficiary_ids": registered}
    )
    rule = {
        "base": {"amount": "200000.00", "currency": "COP"},
        "per_member": {"amount": "50000.00", "currency": "COP"},
        "max": {"amount": "450000.00", "currency": "COP"},
    }
    batch = await _call(
        http,
        "POST",
        "/v1/payment-batches",
        keys["officer"],
        json={"programme_id": pid, "name": "November 2026", "cycle": "2026-11", "amount_rule": rule},
    )
    bid = batch["id"]
    timeline = [("created", batch)]
    timeline.append(("submitted", await _call(http, "POST", f"/v1/payment-batches/{bid}/submit", keys["officer"])))
    for approver in ("approver-a", "approver-b"):
        decided = await _call(
            http,
            "POST",
            f"/v1/payment-batches/{bid}/approvals",
            keys[approver],
            json={"decision": "approve", "comment": "checked"},
        )
        timeline.append((f"approved by {approver}", decided))
    timeline.append(
        (
            "released",
            await _call(
                http,
                "POST",
                f"/v1/payment-batches/{bid}/release",
                {**keys["finance"], "Idempotency-Key": f"demo-{bid}"},
            ),
        )
    )
    started = time.monotonic()
    while True:
        batch = await _call(http, "GET", f"/v1/payment-batches/{bid}", keys["finance"])
        if batch["status"] == "completed" or time.monotonic() - started > 120:
            break
        await asyncio.sleep(0.5)
    timeline.append((f"after {time.monotonic() - started:.1f} s", batch))
    for step, view in timeline:
        say(
            f"  {step:<24} status={view['status']:<17} total={view['total']['amount']} {view['total']['currency']}"
            f"  entitlements={view['counts']}"
        )
    balances = await _call(http, "GET", f"/v1/programmes/{pid}/balances", keys["finance"])
    say(
        "programme balances: "
        + ", ".join(f"{name}={value['amount']}" for name, value in balances.items() if isinstance(value, dict))
    )
    async with httpx.AsyncClient(base_url=simulator.base_url, timeout=10) as provider:
        counters = (await provider.get("/admin/counters", params={"per_key": False})).json()
    say(
        f"provider: {counters['card_loads']} card loads for {counters['distinct_keys']} entitlements, "
        f"{counters['webhooks_sent']} webhooks delivered"
    )
    if batch["status"] != "completed":
        raise RuntimeError(f"the batch did not complete: {batch['status']} {batch['counts']}")
    return registered


async def _paper_cycle(
    http: httpx.AsyncClient,
    settings: Settings,
    keys: dict[str, dict[str, str]],
    people: list[str],
    say: Callable[[str], None],
) -> None:
    """Paper vouchers: issue, print, redeem online and offline, settle the shop."""
    cop = "COP"
    say("paper vouchers:")
    programme = await _call(
        http,
        "POST",
        "/v1/programmes",
        keys["admin"],
        json={
            "name": "Food vouchers — Maicao (demo)",
            "country": "CO",
            "currency": cop,
            "sector": "food_security",
            "delivery_mechanism": "paper_voucher",
            "provider": "paper_voucher",
            "voucher_validity_days": 30,
            "approvals_required": 2,
        },
    )
    pid = programme["id"]
    await _call(
        http,
        "POST",
        f"/v1/programmes/{pid}/funds",
        {**keys["finance"], "Idempotency-Key": f"demo-{pid}"},
        json={"amount": {"amount": "20000000.00", "currency": cop}, "source": "Demo donor", "reference": "DEMO-2"},
    )
    await _call(http, "POST", f"/v1/programmes/{pid}/enrolments", keys["registrar"], json={"beneficiary_ids": people})
    batch = await _call(
        http,
        "POST",
        "/v1/payment-batches",
        keys["officer"],
        json={
            "programme_id": pid,
            "name": "Food December 2026",
            "cycle": "2026-12",
            "amount": {"amount": "120000.00", "currency": cop},
        },
    )
    bid = batch["id"]
    await _call(http, "POST", f"/v1/payment-batches/{bid}/submit", keys["officer"])
    for approver in ("approver-a", "approver-b"):
        await _call(http, "POST", f"/v1/payment-batches/{bid}/approvals", keys[approver], json={"decision": "approve"})
    await _call(http, "POST", f"/v1/payment-batches/{bid}/release", {**keys["finance"], "Idempotency-Key": f"v-{bid}"})
    started = time.monotonic()
    while True:
        vouchers = (
            await _call(http, "GET", "/v1/entitlements", keys["finance"], params={"batch_id": bid, "limit": 200})
        )["items"]
        issued = [v for v in vouchers if v["status"] == "issued"]
        if len(issued) == len(vouchers) or time.monotonic() - started > 60:
            break
        await asyncio.sleep(0.2)
    if len(issued) < 5:  # two redeemed online, three scanned offline
        raise RuntimeError(f"too few vouchers issued for the cycle: {len(issued)} of {len(vouchers)}")
    say(
        f"  released: {len(issued)} of {len(vouchers)} vouchers issued in {time.monotonic() - started:.1f} s,"
        f" e.g. code {issued[0]['voucher_code']}"
    )
    sheets = await http.get(f"/v1/payment-batches/{bid}/vouchers.pdf", headers=keys["officer"])
    if sheets.status_code != httpx.codes.OK or not sheets.content.startswith(b"%PDF"):
        raise RuntimeError(f"printing failed: {sheets.status_code} {sheets.text[:200]}")
    say(f"  printed: vouchers.pdf, {len(sheets.content):,} bytes, ready to cut")

    shop = await _call(
        http,
        "POST",
        "/v1/merchants",
        keys["admin"],
        json={
            "name": "Tienda La Esperanza (demo)",
            "country": "CO",
            "programme_ids": [pid],
            "payout": {"account_name": "Tienda La Esperanza SAS", "account_number": "0123456789", "bank_code": "1007"},
        },
    )
    counter = await _merchant_key(settings, shop["id"])
    online, offline = issued[:2], issued[2:5]
    for voucher in online:
        await _call(
            http,
            "POST",
            "/v1/voucher-redemptions",
            {**counter, "Idempotency-Key": f"online-{voucher['id']}"},
            json={"code": voucher["voucher_code"], "amount": {"amount": "45000.00", "currency": cop}},
        )
    say(f"  redeemed online at {shop['name']}: {len(online)} vouchers, 45000.00 COP each")
    scanned = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    items = [
        {"local_id": f"scan-{n}", "token": v["voucher_token"], "amount": {"amount": "120000.00", "currency": cop},
         "scanned_at": scanned}
        for n, v in enumerate(offline + online[:1])
    ]  # fmt: skip
    sync = {"device_id": "demo-phone-1", "items": items}
    first = await _call(http, "POST", "/v1/voucher-redemptions/sync", counter, json=sync)
    again = await _call(http, "POST", "/v1/voucher-redemptions/sync", counter, json=sync)
    say(
        f"  offline sync of {len(items)} scans: {_outcomes(first)}; sent again: {_outcomes(again)}"
        " (the last scan was of a voucher already part-spent online: more than it holds, kept for review)"
    )
    merchant = await _call(http, "GET", f"/v1/merchants/{shop['id']}", keys["finance"])
    say(f"  the shop is owed {merchant['unsettled']['amount']} COP")

    settlement = await _call(
        http,
        "POST",
        "/v1/merchant-settlements",
        {**keys["finance"], "Idempotency-Key": f"settle-{shop['id']}"},
        json={"merchant_id": shop["id"]},
    )
    sid = settlement["id"]
    await _call(http, "POST", f"/v1/merchant-settlements/{sid}/submit", keys["finance"])
    for approver in ("approver-a", "approver-b"):
        await _call(
            http, "POST", f"/v1/merchant-settlements/{sid}/approvals", keys[approver], json={"decision": "approve"}
        )
    await _call(
        http, "POST", f"/v1/merchant-settlements/{sid}/release", {**keys["finance-2"], "Idempotency-Key": f"r-{sid}"}
    )
    pain = await http.get(f"/v1/merchant-settlements/{sid}/pain001.xml", headers=keys["finance-2"])
    if pain.status_code != httpx.codes.OK:
        raise RuntimeError(f"pain.001 failed: {pain.status_code} {pain.text[:200]}")
    paid = await _call(
        http,
        "POST",
        f"/v1/merchant-settlements/{sid}/paid",
        keys["finance-2"],
        json={"bank_reference": f"DEMO-{sid[:8]}"},
    )
    say(
        f"  settlement {sid}: {paid['redemption_count']} redemptions, {paid['total']['amount']} COP, approved by two,"
        f" released by a third person; pain.001 ({len(pain.content):,} bytes, schema-valid), paid as"
        f" {paid['bank_reference']}"
    )
    merchant = await _call(http, "GET", f"/v1/merchants/{shop['id']}", keys["finance"])
    balances = await _call(http, "GET", f"/v1/programmes/{pid}/balances", keys["finance"])
    say(
        f"  the shop is owed {merchant['unsettled']['amount']} COP; programme balances: "
        + ", ".join(f"{name}={value['amount']}" for name, value in balances.items() if isinstance(value, dict))
    )


def _outcomes(result: dict[str, Any]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for item in result["items"]:
        counted[item["outcome"]] = counted.get(item["outcome"], 0) + 1
    return counted
