"""G2P Connect callbacks at /v1/g2p-connect/{provider}/…: verified before anything is stored, each outcome
stored once in the webhook inbox and applied in the provider's order, whatever order the messages came in."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.providers.g2p_connect import messages
from adapters.providers.g2p_connect.signature import Signer, public_text, seed_text
from cbi_service.kit.settings import Settings, hidden_secrets
from tests.adapters.g2p_schema import errors, request_validator, response_validator
from tests.conftest import TEST_PROVIDERS
from tests.issuance.support import approved_batch, entitlements_of, fund, make_actors, release, seed_beneficiaries
from tests.support import assert_problem, make_programme
from tests.webhooks.support import apply_all, count_events, entitlement, stored_events

PROVIDER_KEY = Ed25519PrivateKey.generate()
ON_DISBURSE = "/v1/g2p-connect/g2p/on-disburse"
ON_STATUS = "/v1/g2p-connect/g2p/txn/on-status"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    g2p = {
        "adapter": "g2p_connect",
        "base_url": "http://127.0.0.1:9",
        "signing_key": seed_text(Ed25519PrivateKey.generate()),
        "provider_public_key": public_text(PROVIDER_KEY),
    }
    return settings.model_copy(update={"providers": hidden_secrets({**TEST_PROVIDERS, "g2p": g2p})})


async def released(client, api_key_factory, session_factory, count: int) -> list[uuid.UUID]:
    """A batch of `count` released to the G2P Connect provider (pending: no worker runs here)."""
    actors = await make_actors(api_key_factory)
    programme = await make_programme(client, actors, delivery_mechanism="prepaid_card", provider="g2p")
    await fund(client, actors, programme["id"], "100000000.00")
    await seed_beneficiaries(session_factory, programme["id"], count)
    batch = await approved_batch(client, actors, programme["id"])
    assert (await release(client, actors, batch["id"])).status_code == 200
    return [e.id for e in await entitlements_of(session_factory, batch["id"])]


def outcome(entitlement_id: uuid.UUID | str, status: str = "succ", code: str | None = None, **extra: Any) -> dict:
    item = {"reference_id": str(entitlement_id), "timestamp": messages.now_text(), "status": status, **extra}
    if code is not None:
        item |= {"status_reason_code": code, "status_reason_message": "as the provider says"}
    return item


def on_disburse(*items: dict[str, Any], transaction_id: str = "txn-1", key: Ed25519PrivateKey = PROVIDER_KEY) -> dict:
    header = messages.callback_header(
        "on-disburse",
        status="succ",
        sender_id="g2p",
        receiver_id="cbi-service",
        total_count=len(items),
        completed_count=len(items),
    )
    body = Signer(key, "g2p").signed(header, {"transaction_id": transaction_id, "disbursements_status": list(items)})
    assert errors(request_validator("/on-disburse"), body) == [], "the tests speak the published standard"
    return body


async def test_an_on_disburse_is_stored_once_acknowledged_and_applied(client, api_key_factory, session_factory):
    ids = await released(client, api_key_factory, session_factory, 2)
    body = on_disburse(*(outcome(e) for e in ids))

    first = await client.post(ON_DISBURSE, json=body)
    again = await client.post(ON_DISBURSE, json=body)

    assert first.status_code == again.status_code == 200, first.text
    assert errors(response_validator("/on-disburse"), first.json()) == []
    assert first.json()["message"]["ack_status"] == "ACK"
    stored = await stored_events(session_factory)
    message_id = body["header"]["message_id"]
    assert sorted(e.webhook_id for e in stored) == sorted(f"{message_id}/{e}" for e in ids)
    assert all("payee" not in e.body for e in stored)
    await apply_all(session_factory)
    for entitlement_id in ids:
        found = await entitlement(session_factory, entitlement_id)
        assert (found.status, found.provider_ref) == ("issued", "txn-1")
    assert {e.status for e in await stored_events(session_factory)} == {"applied"}


async def test_outcomes_settle_where_the_provider_says_whatever_order_they_come_in(
    client, api_key_factory, session_factory
):
    retried, paid, duplicate, refused = await released(client, api_key_factory, session_factory, 4)
    earlier = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    late_success = on_disburse(outcome(retried), outcome(paid), transaction_id="txn-2")
    first_rejection = on_disburse(outcome(retried, "rjct", "rjct.timestamp.invalid", timestamp=earlier))
    still_pending = on_disburse(outcome(paid, "pdng", timestamp=earlier), outcome(duplicate, "pdng"))
    others = on_disburse(
        outcome(duplicate, "rjct", messages.DUPLICATE_REFERENCE), outcome(refused, "rjct", "rjct.payee_fa.invalid")
    )

    for body in (late_success, still_pending, first_rejection, others):
        assert (await client.post(ON_DISBURSE, json=body)).status_code == 200
    await apply_all(session_factory)

    assert (await entitlement(session_factory, retried)).status == "issued"
    assert (await entitlement(session_factory, paid)).status == "issued"
    assert (await entitlement(session_factory, duplicate)).status == "pending", "a duplicate changes nothing"
    failed = await entitlement(session_factory, refused)
    assert (failed.status, failed.failure_retryable) == ("failed", False)
    assert (failed.failure_reason or "").startswith("rjct.payee_fa.invalid")
    assert await count_events(session_factory) == 4, "pdng and the duplicate rejection store nothing"


async def test_answers_to_status_requests_go_through_the_same_inbox(client, api_key_factory, session_factory):
    (entitlement_id,) = await released(client, api_key_factory, session_factory, 1)
    header = messages.callback_header(
        "on-disburse", status="succ", sender_id="g2p", receiver_id="cbi-service", total_count=1, completed_count=1
    )
    message = {
        "transaction_id": "status-1",
        "correlation_id": "c-1",
        "txnstatus_response": {
            "txn_type": "on-disburse",
            "txn_status": {"transaction_id": "txn-9", "disbursements_status": [outcome(entitlement_id)]},
        },
    }
    body = Signer(PROVIDER_KEY, "g2p").signed(header, message)
    assert errors(request_validator("/disburse/txn/on-status"), body) == []

    response = await client.post(ON_STATUS, json=body)
    await apply_all(session_factory)

    assert response.status_code == 200, response.text
    found = await entitlement(session_factory, entitlement_id)
    assert (found.status, found.provider_ref) == ("issued", "txn-9")


def _forgeries() -> dict[str, Any]:
    entitlement_id = uuid.uuid4()
    body = on_disburse(outcome(entitlement_id))
    stale = Signer(PROVIDER_KEY, "g2p").sign(
        body["header"], body["message"], now=(datetime.now(UTC) - timedelta(minutes=10)).timestamp()
    )
    tampered = json.loads(json.dumps(body))
    tampered["message"]["disbursements_status"][0]["status"] = "rjct"
    return {
        "another key": on_disburse(outcome(entitlement_id), key=Ed25519PrivateKey.generate()),
        "tampered": tampered,
        "stale": {**body, "signature": stale},
        "unsigned": {"header": body["header"], "message": body["message"]},
        "garbled": {**body, "signature": "Signature: nonsense"},
    }


@pytest.mark.parametrize("forgery", ["another key", "tampered", "stale", "unsigned", "garbled"])
async def test_a_callback_without_the_providers_fresh_signature_is_refused_and_not_stored(
    client, session_factory, forgery
):
    response = await client.post(ON_DISBURSE, json=_forgeries()[forgery])

    problem = assert_problem(response, 401)
    assert "signature" in problem["detail"]
    assert await count_events(session_factory) == 0


@pytest.mark.parametrize(
    ("path", "content", "status", "field"),
    [
        (ON_DISBURSE, b"{not json", 400, None),
        (ON_DISBURSE, b"[1, 2]", 422, ""),
        (ON_DISBURSE, "status", 422, "message.disbursements_status[0].status"),
        (ON_DISBURSE, "reference", 422, "message.disbursements_status[0].reference_id"),
        (ON_DISBURSE, "nul", 422, "message.disbursements_status.0.status_reason_message"),
        (ON_STATUS, "wrong kind", 422, "message.correlation_id"),
        ("/v1/g2p-connect/nobody/on-disburse", "valid", 404, None),
        ("/v1/g2p-connect/cards/on-disburse", "valid", 404, None),
    ],
)
async def test_bad_input_is_a_clear_4xx(client, session_factory, path, content, status, field):
    entitlement_id = uuid.uuid4()
    bodies = {
        "valid": on_disburse(outcome(entitlement_id)),
        "reference": on_disburse(outcome("not-ours")),
        "nul": on_disburse(
            outcome(entitlement_id, "rjct", "rjct.amount.invalid") | {"status_reason_message": "a\x00b"}
        ),
        "wrong kind": on_disburse(outcome(entitlement_id)),
    }
    if content == "status":  # signed, but not a status the standard has
        body = on_disburse(outcome(entitlement_id))
        body["message"]["disbursements_status"][0]["status"] = "done"
        body["signature"] = Signer(PROVIDER_KEY, "g2p").sign(body["header"], body["message"])
        content = json.dumps(body).encode()
    elif isinstance(content, str):
        content = json.dumps(bodies[content]).encode()

    response = await client.post(path, content=content, headers={"content-type": "application/json"})

    problem = assert_problem(response, status)
    if field is not None:
        assert field in [error["field"] for error in problem["errors"]], problem
    assert await count_events(session_factory) == 0
