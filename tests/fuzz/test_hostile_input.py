"""Schemathesis over every operation, as every role and as nobody, with hostile strings injected into every
string field: no 5xx, and every response (status, content type, headers, body) as the OpenAPI documents it.

In-process (ASGI) against a fresh copy of the migrated test database, seeded with one of each resource so
that generated requests reach the services, the ledger and PostgreSQL instead of stopping at a 404. Bounded
by a fixed number of derandomized examples per operation and caller.
"""

from __future__ import annotations

import asyncio
import json
import operator
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cbi_service.app import create_app
from cbi_service.auth.roles import STAFF_ROLES, Role
from cbi_service.auth.service import create_api_key
from cbi_service.kit.db import make_engine, make_session_factory
from cbi_service.kit.settings import Settings, to_asyncpg_url
from tests.auth.support import MATRIX
from tests.beneficiaries.support import person_body
from tests.conftest import TEST_PROVIDERS, _admin, _in_thread, with_database
from tests.merchants.support import merchant_body
from tests.support import programme_body
from tests.vouchers.support import PAPER

pytestmark = pytest.mark.slow

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
#: Examples per operation for a caller it admits, and for one it refuses (401/403 come before any work).
ADMITTED_EXAMPLES = 6
REFUSED_EXAMPLES = 2
NOBODY = "nobody"
CALLERS = [*(role.value for role in Role), NOBODY]

BIG = "x" * 65536
# Text a client can send that has broken services before: NUL, other scripts' digits, what spreadsheets
# evaluate, a 64 KB string; lone surrogates travel only in JSON (as `\ud800` escapes), never in a URL.
_FIXED = [
    "\x00",
    "a\x00b",
    "１０.００",
    "١٠.٠٠",
    "=cmd|' /C calc'!A0",
    "+1+1",
    "-1+1",
    "@SUM(1+1)",
    "\t=1",
    BIG,
]
URL_TEXT = st.one_of(
    st.sampled_from(_FIXED),
    st.builds(operator.add, st.sampled_from(["=", "+", "-", "@", "\x00"]), st.text(max_size=12)),
    st.text(alphabet="０１２３４５６７８９.．-", min_size=1, max_size=12),
)
JSON_TEXT = st.one_of(URL_TEXT, st.sampled_from(["\ud800", "a\udfffb", "\udc00\ud800"]))
#: One of each kind, put by the sweep into every string field of a valid body and every string query parameter.
SAMPLES = {
    "NUL": "a\x00b",
    "lone surrogate": "\ud800",
    "full-width digits": "１０.００",
    "formula": "=cmd|' /C calc'!A0",
    "64 KB": BIG,
}
URL_SAMPLES = {kind: text for kind, text in SAMPLES.items() if kind != "lone surrogate"}


BATCH = {"name": "Noviembre", "cycle": "2026-11", "amount": {"amount": "100000.00", "currency": "COP"}}


def _inject(draw: st.DrawFn, value: Any, text: st.SearchStrategy[str]) -> Any:
    """`value` with some of its strings (at any depth) replaced by hostile ones."""
    if isinstance(value, str):
        return draw(text) if draw(st.integers(0, 2)) == 0 else value
    if isinstance(value, dict):
        return {key: _inject(draw, child, text) for key, child in value.items()}
    if isinstance(value, list):
        return [_inject(draw, child, text) for child in value]
    return value


def valid_bodies(known: dict[str, str]) -> dict[tuple[str, str], Any]:
    """A body each operation accepts, so that injected text reaches the services, not only validation."""
    money = {"amount": "100000.00", "currency": "COP"}
    return {
        ("POST", "/v1/programmes"): programme_body(),
        ("POST", "/v1/programmes/{programme_id}/funds"): {"amount": money, "source": "ECHO", "reference": "G-2"},
        ("POST", "/v1/programmes/{programme_id}/enrolments"): {"beneficiary_ids": [known["beneficiary_id"]]},
        ("POST", "/v1/beneficiaries"): person_body(),
        ("POST", "/v1/dedup/check"): person_body(),
        ("PATCH", "/v1/beneficiaries/{beneficiary_id}"): {"phone": "0412-555 12 34", "external_ref": "CUC-2"},
        ("POST", "/v1/payment-batches"): {**BATCH, "programme_id": known["programme_id"]},
        ("POST", "/v1/payment-batches/{batch_id}/approvals"): {"decision": "approve", "comment": "ok"},
        ("POST", "/v1/payment-batches/{batch_id}/follow-up"): {"name": "Diciembre"},
        ("POST", "/v1/adjudications/{adjudication_id}/decision"): {"decision": "duplicate", "note": "same"},
        ("PATCH", "/v1/programmes/{programme_id}"): {"appealing_organisation": "ACNUR", "activity_name": "MPC"},
        ("POST", "/v1/fx-rates"): {"currency": "COP", "month": "2026-11", "usd_per_unit": "0.00025", "source": "TRM"},
    }


@st.composite
def hostile_cases(draw: st.DrawFn, operation: Any, known: dict[str, str], auth: str | None) -> Any:
    valid = valid_bodies(known).get((operation.method.upper(), operation.path))
    if valid is not None and draw(st.booleans()):
        case = draw(operation.as_strategy(body=valid))
    else:
        modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
        case = draw(st.one_of(*(operation.as_strategy(mode) for mode in modes)))
    for name in list(case.path_parameters or {}):
        if name in known and draw(st.integers(0, 3)) > 0:
            case.path_parameters[name] = known[name]
    if draw(st.booleans()):
        case.path_parameters = _inject(draw, dict(case.path_parameters or {}), URL_TEXT)
        if isinstance(case.query, dict):
            case.query = _inject(draw, case.query, URL_TEXT)
        if isinstance(case.body, dict | list | str):
            if case.media_type is None or "json" in case.media_type:
                # Serialized here, ASCII-escaped: the only way a lone surrogate travels (as `\ud800`).
                case.body = json.dumps(_inject(draw, case.body, JSON_TEXT)).encode()
            else:
                case.body = _inject(draw, case.body, URL_TEXT)
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    case.headers = headers | ({"Authorization": auth} if auth else {})
    return case


async def _keys(settings: Settings) -> dict[str, str]:
    assert settings.async_database_url
    engine = make_engine(settings.async_database_url, settings)
    try:
        async with make_session_factory(engine).begin() as session:
            keys = {}
            for role in Role:
                if role in STAFF_ROLES:
                    _, raw = await create_api_key(session, f"fuzz-{role.value}", [role])
                    keys[role.value] = f"Bearer {raw}"
    finally:
        await engine.dispose()
    return keys


async def _merchant_key(settings: Settings, merchant_id: str) -> str:
    assert settings.async_database_url
    engine = make_engine(settings.async_database_url, settings)
    try:
        async with make_session_factory(engine).begin() as session:
            _, raw = await create_api_key(session, "fuzz-merchant", [Role.merchant], merchant_id=uuid.UUID(merchant_id))
    finally:
        await engine.dispose()
    return f"Bearer {raw}"


def _seed(client: Any, keys: dict[str, str]) -> dict[str, str]:
    """One programme (funded), beneficiary (enrolled), batch, entitlement and ledger account to aim at."""

    def call(method: str, path: str, role: str, **kwargs: Any) -> Any:
        headers = {"Authorization": keys[role], **kwargs.pop("headers", {})}
        response = client.request(method, path, headers=headers, **kwargs)
        assert response.status_code < 300, (path, response.status_code, response.text)
        return response.json()

    programme = call("POST", "/v1/programmes", "admin", json=programme_body())["id"]
    funding = {"amount": {"amount": "5000000.00", "currency": "COP"}, "source": "ECHO", "reference": "G-1"}
    call("POST", f"/v1/programmes/{programme}/funds", "finance", json=funding, headers={"Idempotency-Key": "seed"})
    beneficiary = call("POST", "/v1/beneficiaries", "registrar", json=person_body())["id"]
    enrolment = {"beneficiary_ids": [beneficiary]}
    call("POST", f"/v1/programmes/{programme}/enrolments", "programme_officer", json=enrolment)
    batch = call("POST", "/v1/payment-batches", "programme_officer", json={**BATCH, "programme_id": programme})["id"]
    entitlement = call("GET", "/v1/entitlements", "admin", params={"batch_id": batch})["items"][0]["id"]
    account = call("GET", "/v1/ledger/accounts", "admin")["items"][0]["id"]
    paper = call("POST", "/v1/programmes", "admin", json=programme_body(**PAPER))["id"]
    merchant = call("POST", "/v1/merchants", "admin", json=merchant_body([paper]))["id"]
    return {
        "merchant_id": merchant,
        "programme_id": programme,
        "beneficiary_id": beneficiary,
        "batch_id": batch,
        "entitlement_id": entitlement,
        "account_id": account,
        "provider": "cards",
    }


@pytest.fixture(scope="module")
def fuzz_target(
    server_url: str, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Any, dict[str, str], dict[str, str]]]:
    """(schema, keys by role, seeded ids by path parameter) of the app on a fresh database."""
    name = f"cbi_t_{uuid.uuid4().hex[:12]}"
    _in_thread(asyncio.run, _admin(server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"'))
    settings = Settings(
        database_url=to_asyncpg_url(with_database(server_url, name)),
        data_dir=tmp_path_factory.mktemp("data"),
        run_worker=False,
        providers=TEST_PROVIDERS,
        log_level="CRITICAL",
    )
    try:
        keys = _in_thread(asyncio.run, _keys(settings))
        app = create_app(settings)
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        with asgi.get_client(app) as client:
            known = _seed(client, keys)
        keys["merchant"] = _in_thread(asyncio.run, _merchant_key(settings, known["merchant_id"]))
        yield schema, keys, known
    finally:
        asgi.shutdown_lifespans()
        _in_thread(asyncio.run, _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_hostile_input_as_every_caller_finds_no_5xx_and_no_schema_violation(fuzz_target):
    schema, keys, known = fuzz_target
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 39
    failures: list[str] = []
    for operation in operations:
        admitted = MATRIX.get((operation.method.upper(), operation.path), frozenset(CALLERS))
        for caller in CALLERS:
            examples = ADMITTED_EXAMPLES if caller in admitted else REFUSED_EXAMPLES

            @given(case=hostile_cases(operation, known, keys.get(caller)))
            @settings(
                max_examples=examples,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.generate],
            )
            def exercise(case: Any) -> None:
                case.call_and_validate(checks=CHECKS)

            try:
                exercise()
            except Exception as exc:
                failures.append(f"{operation.label} as {caller}: {exc}")
    assert failures == [], "\n\n".join(failures)


def _string_leaves(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for key, child in value.items():
            yield from _string_leaves(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _string_leaves(child, (*path, index))


def _replaced(value: Any, path: tuple[str | int, ...], text: str) -> Any:
    if not path:
        return text
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replaced(value[head], rest, text)}
    return [_replaced(child, rest, text) if index == head else child for index, child in enumerate(value)]


def _string_query_parameters(operation: Any) -> list[str]:
    names = []
    for parameter in operation.definition.raw.get("parameters", []):
        schema = parameter.get("schema", {})
        types = {schema.get("type"), *(option.get("type") for option in schema.get("anyOf", []))}
        if parameter["in"] == "query" and "string" in types:
            names.append(parameter["name"])
    return names


def test_every_string_field_answers_hostile_text_as_documented(fuzz_target):
    """Each kind of hostile text in each string field of a valid body, and in each string query parameter."""
    schema, keys, known = fuzz_target
    bodies = valid_bodies(known)
    failures: list[str] = []
    sent = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        admitted = sorted(MATRIX.get((operation.method.upper(), operation.path), ()))
        if not admitted:
            continue  # signed webhooks: nothing past the signature check reads the text
        auth = keys["admin" if "admin" in admitted else admitted[0]]
        path_parameters = {
            parameter["name"]: known.get(parameter["name"], str(uuid.uuid4()))
            for parameter in operation.definition.raw.get("parameters", [])
            if parameter["in"] == "path"
        }
        valid = bodies.get((operation.method.upper(), operation.path))
        variants: list[tuple[str, dict[str, Any], Any]] = [
            (f"{kind} in query {name}", {name: text}, valid)
            for name in _string_query_parameters(operation)
            for kind, text in URL_SAMPLES.items()
        ]
        if valid is not None:
            variants += [
                (f"{kind} in body {'.'.join(map(str, leaf))}", {}, _replaced(valid, leaf, text))
                for leaf in _string_leaves(valid)
                for kind, text in SAMPLES.items()
            ]
        for what, query, body in variants:
            headers = {"Authorization": auth, "Idempotency-Key": f"sweep-{uuid.uuid4()}"}
            # ASCII-escaped JSON: how a lone surrogate travels (`\ud800`).
            with_body = {} if body is None else {"body": json.dumps(body).encode(), "media_type": "application/json"}
            case = operation.Case(path_parameters=path_parameters, headers=headers, query=query, **with_body)
            sent += 1
            try:
                case.call_and_validate(checks=CHECKS)
            except Exception as exc:
                failures.append(f"{operation.label}, {what}: {exc}")
    assert sent >= 200
    assert failures == [], "\n\n".join(failures)
