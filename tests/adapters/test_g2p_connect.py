"""The `g2p_connect` adapter against the simulator speaking G2P Connect in its own process: what it sends and
what it accepts checked against the published OpenAPI document, signatures, statuses, amounts, errors."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.providers import (
    CallbackProvider,
    IssueInstruction,
    PermanentProviderError,
    ProviderAdapter,
    ProviderConfigError,
    TransientProviderError,
    UnauthenticCallback,
    build_provider,
)
from adapters.providers.g2p_connect import messages
from adapters.providers.g2p_connect.messages import DisbursementStatus
from adapters.providers.g2p_connect.signature import Signer, public_text, seed_text
from adapters.simulator import Faults, SimulatorAdmin, SimulatorProcess
from tests.adapters.g2p_schema import errors, request_validator, response_validator

SERVICE_KEY = Ed25519PrivateKey.generate()
PROVIDER_KEY = Ed25519PrivateKey.generate()


class CallbackSink:
    """Plays the service's G2P Connect routes: answers 200 to every callback and keeps its path."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/g2p-connect/sim-g2p"
        config = uvicorn.Config(self._app, interface="asgi3", log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)

    def __enter__(self) -> CallbackSink:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "callback sink did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self._server.should_exit = True
        self._thread.join(5)

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


@pytest.fixture(scope="module")
def sink() -> Iterator[CallbackSink]:
    with CallbackSink() as running:
        yield running


@pytest.fixture(scope="module")
def simulator(sink: CallbackSink) -> Iterator[SimulatorProcess]:
    with SimulatorProcess.start(
        sink.url,
        None,
        protocol="g2p-connect",
        g2p_signing_key=seed_text(PROVIDER_KEY),
        g2p_client_public_key=public_text(SERVICE_KEY),
        callback_max_items=2,
        seed=5,
    ) as process:
        yield process


@pytest.fixture
async def admin(simulator: SimulatorProcess, sink: CallbackSink) -> AsyncIterator[SimulatorAdmin]:
    async with SimulatorAdmin(simulator.base_url) as client:
        await client.set_faults(**Faults().model_dump())
        await client.reset()
        sink.paths.clear()
        yield client


def config(simulator: SimulatorProcess, **options: Any) -> dict[str, Any]:
    return {
        "adapter": "g2p_connect",
        "base_url": simulator.base_url,
        "signing_key": seed_text(SERVICE_KEY),
        "provider_public_key": public_text(PROVIDER_KEY),
        "receiver_id": "sim-g2p",
        "callback_url": "https://cbi.example/v1/g2p-connect/sim-g2p",
        **options,
    }


@pytest.fixture
async def adapter(simulator: SimulatorProcess, admin: SimulatorAdmin) -> AsyncIterator[ProviderAdapter]:
    built = build_provider("sim-g2p", config(simulator))
    yield built
    await built.aclose()


def instruction(amount_minor: int = 15_000_000, currency: str = "COP") -> IssueInstruction:
    return IssueInstruction(uuid.uuid4(), str(uuid.uuid4()), amount_minor, currency, str(uuid.uuid4()))


async def recent(admin: SimulatorAdmin) -> dict[str, list[dict[str, Any]]]:
    return await admin.messages()


async def drained(admin: SimulatorAdmin) -> dict[str, Any]:
    async with asyncio.timeout(10):
        return await admin.drained()


async def test_a_chunk_is_one_signed_disburse_request_the_published_schema_accepts(adapter, admin) -> None:
    chunk = [instruction() for _ in range(3)]

    outcomes = await adapter.issue(chunk)

    assert [o.accepted for o in outcomes] == [True] * 3
    assert len({o.provider_ref for o in outcomes}) == 1
    (received,) = (await recent(admin))["received"]
    body = received["body"]
    assert received["path"] == "/disburse"
    assert errors(request_validator("/disburse"), body) == []
    assert body["header"]["action"] == "disburse"
    assert body["header"]["total_count"] == 3
    assert body["header"]["sender_uri"] == "https://cbi.example/v1/g2p-connect/sim-g2p/on-disburse"
    assert body["message"]["transaction_id"] == outcomes[0].provider_ref
    assert body["signature"].startswith('Signature: namespace="g2p", kidId="cbi-service|1|ed25519"')
    assert [d["reference_id"] for d in body["message"]["disbursements"]] == [str(i.entitlement_id) for i in chunk]
    first = body["message"]["disbursements"][0]
    assert first["payee_fa"] == f"token:{chunk[0].beneficiary_ref}@sim-g2p"
    assert first["payer_fa"] == f"programme:{chunk[0].programme_ref}@cbi-service"
    assert (first["amount"], first["currency_code"]) == ("150000.00", "COP")


async def test_the_providers_callbacks_conform_and_read_as_one_event_per_outcome(adapter, admin, sink) -> None:
    chunk = [instruction() for _ in range(3)]
    await adapter.issue(chunk)
    counters = await drained(admin)

    assert sink.paths == ["/v1/g2p-connect/sim-g2p/on-disburse"] * 2
    sent = (await recent(admin))["sent"]
    assert [message["path"] for message in sent] == ["on-disburse", "on-disburse"], "two items per callback at most"
    events = []
    for message in sent:
        assert errors(request_validator("/on-disburse"), message["body"]) == []
        assert isinstance(adapter, CallbackProvider)
        callback = adapter.read_callback(message["body"], "on-disburse")
        assert callback.message_id == message["body"]["header"]["message_id"]
        assert errors(response_validator("/on-disburse"), dict(callback.acknowledgement)) == []
        events += [item.event for item in callback.events]
    assert sorted(e.entitlement_id for e in events) == sorted(i.entitlement_id for i in chunk)
    assert {e.type for e in events} == {"entitlement.issued"}
    assert counters["disbursed"] == counters["distinct_references_disbursed"] == 3
    assert "payee_fa" not in "".join(
        item.record for m in sent for item in adapter.read_callback(m["body"], "on-disburse").events
    )


async def test_a_resent_chunk_pays_nobody_twice_and_its_duplicates_change_nothing(adapter, admin) -> None:
    chunk = [instruction() for _ in range(2)]
    first = await adapter.issue(chunk)
    second = await adapter.issue(chunk)  # as after an answer lost on the way back
    counters = await drained(admin)

    assert first[0].provider_ref != second[0].provider_ref
    assert counters["disbursed"] == 2
    assert counters["rejected_duplicates"] == 2
    assert counters["paid_more_than_once"] == 0
    read = [adapter.read_callback(m["body"], "on-disburse") for m in (await recent(admin))["sent"]]
    assert sum(len(callback.events) for callback in read) == 2, "the duplicate rejections carry no event"
    statuses = [await adapter.status(i.entitlement_id) for i in chunk]
    assert [(s.status, s.provider_ref) for s in statuses] == [("issued", first[0].provider_ref)] * 2


async def test_status_requests_conform_and_are_answered_by_signed_callbacks(adapter, admin, sink) -> None:
    chunk = [instruction() for _ in range(3)]
    await adapter.issue(chunk)
    await drained(admin)
    never_sent = uuid.uuid4()

    await adapter.request_statuses([*(i.entitlement_id for i in chunk), never_sent])
    await drained(admin)

    assert "/v1/g2p-connect/sim-g2p/txn/on-status" in sink.paths
    messages_ = await recent(admin)
    request = messages_["received"][-1]
    assert request["path"] == "/disburse/txn/status"
    assert errors(request_validator("/disburse/txn/status"), request["body"]) == []
    answers = [m for m in messages_["sent"] if m["path"] == "txn/on-status"]
    events = {}
    for answer in answers:
        assert errors(request_validator("/disburse/txn/on-status"), answer["body"]) == []
        for item in adapter.read_callback(answer["body"], "on-status").events:
            events[item.event.entitlement_id] = item.event
    assert {e for e, event in events.items() if event.type == "entitlement.issued"} == {i.entitlement_id for i in chunk}
    assert events[never_sent].type == "entitlement.failed"
    assert (events[never_sent].reason or "").startswith("rjct.reference_id.invalid")
    assert events[never_sent].retryable is True


async def test_the_synchronous_status_conforms_both_ways(simulator, adapter, admin) -> None:
    item = instruction()
    await adapter.issue([item])
    await drained(admin)

    issued = await adapter.status(item.entitlement_id)
    unknown = await adapter.status(uuid.uuid4())

    assert issued.status == "issued"
    assert (unknown.status, unknown.retryable) == ("failed", True)
    request = (await recent(admin))["received"][-1]
    assert request["path"] == "/disburse/sync/txn/status"
    assert errors(request_validator("/disburse/sync/txn/status"), request["body"]) == []
    async with httpx.AsyncClient() as http:  # the answer itself, as the provider signs it
        signer = Signer(SERVICE_KEY, "cbi-service")
        header = messages.request_header("search", sender_id="cbi-service", receiver_id="sim-g2p", total_count=1)
        query = {
            "transaction_id": "t-1",
            "txnstatus_request": {
                "reference_id": "q-1",
                "txn_type": "disburse",
                "attribute_type": "reference_id_list",
                "attribute_value": [str(item.entitlement_id)],
            },
        }
        answer = await http.post(f"{simulator.base_url}/disburse/sync/txn/status", json=signer.signed(header, query))
    assert answer.status_code == 200
    assert errors(response_validator("/disburse/sync/txn/status"), answer.json()) == []


async def test_cancel_leaves_unpaid_only_what_the_provider_never_took(adapter, admin) -> None:
    item = instruction()
    await adapter.issue([item])
    await drained(admin)

    held = await adapter.cancel(item.entitlement_id, None)
    unseen = await adapter.cancel(uuid.uuid4(), None)

    assert (held.cancelled, held.status, held.error_code) == (False, "issued", "not_cancellable")
    assert unseen.cancelled


async def test_a_declined_disbursement_is_rejected_with_a_reason_code(adapter, admin) -> None:
    await admin.set_faults(decline_rate=1.0)
    item = instruction()
    await adapter.issue([item])
    await drained(admin)

    (message,) = (await recent(admin))["sent"]
    (outcome,) = adapter.read_callback(message["body"], "on-disburse").events

    assert outcome.event.type == "entitlement.failed"
    assert (outcome.event.reason or "").split(":")[0] in messages.RETRYABLE_REJECTIONS | {
        "rjct.payee_fa.invalid",
        "rjct.payer_fa.invalid",
    }


async def test_a_disbursement_the_provider_rejects_stays_unpaid_when_sent_again(simulator, admin) -> None:
    signer = Signer(SERVICE_KEY, "cbi-service")
    invalid = {
        "reference_id": str(uuid.uuid4()),
        "payer_fa": "programme:1@cbi-service",
        "payee_fa": "token:1@sim-g2p",
        "amount": "0.00",
        "currency_code": "COP",
    }
    async with httpx.AsyncClient(base_url=simulator.base_url) as http:
        for _ in range(2):
            header = messages.request_header("disburse", sender_id="cbi-service", receiver_id="sim-g2p", total_count=1)
            body = signer.signed(header, {"transaction_id": str(uuid.uuid4()), "disbursements": [invalid]})
            assert errors(request_validator("/disburse"), body) == []
            answer = await http.post("/disburse", json=body)
            assert answer.status_code == 200, answer.text
            assert errors(response_validator("/disburse"), answer.json()) == []
    counters = await drained(admin)

    assert (counters["disbursed"], counters["rejected"], counters["rejected_duplicates"]) == (0, 2, 0)
    reasons = [
        item["status_reason_code"]
        for message in (await recent(admin))["sent"]
        for item in message["body"]["message"]["disbursements_status"]
    ]
    assert reasons == ["rjct.amount.invalid"] * 2


async def test_a_callback_is_believed_only_with_a_fresh_signature_of_the_providers_key(adapter, admin) -> None:
    await adapter.issue([instruction()])
    await drained(admin)
    (message,) = (await recent(admin))["sent"]
    body = message["body"]
    impostor = Signer(Ed25519PrivateKey.generate(), "sim-g2p")
    stale = Signer(PROVIDER_KEY, "sim-g2p").sign(
        body["header"], body["message"], now=datetime.now(UTC).timestamp() - 600
    )
    tampered = {**body, "message": {**body["message"], "transaction_id": "another"}}

    for forged in (
        tampered,
        {**body, "signature": impostor.sign(body["header"], body["message"])},
        {**body, "signature": stale},
        {key: value for key, value in body.items() if key != "signature"},
        {**body, "signature": body["signature"].replace('algorithm="ed25519"', 'algorithm="hmac-sha256"')},
    ):
        with pytest.raises(UnauthenticCallback):
            adapter.read_callback(forged, "on-disburse")


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        ("rcvd", None, None),
        ("pdng", None, None),
        ("succ", None, ("entitlement.issued", None)),
        ("rjct", "rjct.reference_id.duplicate", None),
        ("rjct", "rjct.timestamp.invalid", ("entitlement.failed", True)),
        ("rjct", "rjct.schedule_ts.invalid", ("entitlement.failed", True)),
        ("rjct", "rjct.reference_id.invalid", ("entitlement.failed", True)),
        ("rjct", "rjct.payee_fa.invalid", ("entitlement.failed", False)),
        ("rjct", "rjct.payer_fa.invalid", ("entitlement.failed", False)),
        ("rjct", "rjct.amount.invalid", ("entitlement.failed", False)),
        ("rjct", "rjct.currency_code.invalid", ("entitlement.failed", False)),
        ("rjct", None, ("entitlement.failed", False)),
    ],
)
def test_statuses_and_reason_codes_map_onto_entitlement_events(status, code, expected) -> None:
    item = DisbursementStatus(
        reference_id="x",
        timestamp=datetime.now(UTC).isoformat(),
        status=status,
        status_reason_code=code,
        status_reason_message="m",
    )

    event = messages.event_of(item, "txn-1", uuid.uuid4())

    assert (None if event is None else (event.type, event.retryable)) == expected
    if event is not None:
        assert event.provider_ref == "txn-1"


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (15_000_000, "COP", "150000.00"),
        (1500, "CLP", "1500.00"),
        (1250, "KWD", "1.25"),
        (1255, "KWD", None),
        (5, "USD", "0.05"),
    ],
)
def test_amounts_are_written_as_the_published_amount_or_not_at_all(minor, currency, text) -> None:
    assert messages.format_amount(minor, currency) == text
    if text is not None:
        assert messages.amount_minor(text, currency) == minor


async def test_an_amount_it_cannot_write_is_declined_alone_and_never_sent(adapter, admin) -> None:
    fine, fraction, unknown = instruction(1250, "KWD"), instruction(1255, "KWD"), instruction(100, "XQQ")

    outcomes = await adapter.issue([fraction, fine, unknown])

    assert [(o.accepted, o.error_code) for o in outcomes] == [
        (False, "amount_not_representable"),
        (True, None),
        (False, "invalid_currency"),
    ]
    (received,) = (await recent(admin))["received"]
    assert [d["reference_id"] for d in received["body"]["message"]["disbursements"]] == [str(fine.entitlement_id)]


async def test_an_outage_is_transient_and_a_key_the_provider_does_not_know_is_permanent(
    simulator, adapter, admin
) -> None:
    await admin.outage(30)
    try:
        with pytest.raises(TransientProviderError) as outage:
            await adapter.issue([instruction()])
        assert outage.value.error_code == "err.service.unavailable"
        assert outage.value.retry_after is not None
    finally:
        await admin.outage(0)
    stranger = build_provider("sim-g2p", config(simulator, signing_key=seed_text(Ed25519PrivateKey.generate())))
    try:
        with pytest.raises(PermanentProviderError) as refused:
            await stranger.issue([instruction()])
    finally:
        await stranger.aclose()
    assert (refused.value.status_code, refused.value.error_code) == (401, "err.signature.invalid")
    assert (await admin.counters(per_key=False))["disburse_requests"] == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"signing_key": "c2VjcmV0"}, "signing_key: not PEM"),
        ({"provider_public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"}, "provider_public_key"),
        ({"sender_id": "our agency"}, "sender_id"),
        ({"chunk_size": 5000}, "chunk_size"),
        ({"callback_url": "ftp://x"}, "callback_url"),
    ],
)
def test_a_bad_entry_stops_startup_without_echoing_secrets(simulator, options, message) -> None:
    with pytest.raises(ProviderConfigError) as refused:
        build_provider("sim-g2p", config(simulator, **options))

    assert message in str(refused.value)
    assert seed_text(SERVICE_KEY) not in str(refused.value)
