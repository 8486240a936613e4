"""Full card numbers are told apart from tokens, and an adapter never passes one on from a provider's answer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import uuid4

import pytest

from adapters.providers import build_provider
from adapters.providers.card_numbers import REDACTED, contains_pan, redact_pans


@pytest.mark.parametrize(
    "value",
    [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "378282246310005",  # 15 digits
        "6011000990139424",
        "tok_4111111111111111",
        "４１１１１１１１１１１１１１１１",  # full-width digits
        4111111111111111,
    ],
)
def test_card_numbers_are_recognised(value):
    assert contains_pan(value)


@pytest.mark.parametrize(
    "value",
    [
        "4111111111111112",  # fails the Luhn check, as format-preserving tokens do on purpose
        "tok_5f3a9c1e2b7d",
        "4242",
        "411111111111",  # 12 digits
        "41111111111111111111",  # 20 digits
        "2026-11-22T10:15:00+00:00",
        "prv_0123456789abcdef01234567",
        "tok_ab4111111111111111cd",  # digits inside a random hex token
        "tok_4111111111111111ff",
        "tok_41111111111111111ab",  # a Luhn-valid 16-digit part of a longer run inside a token
        None,
        True,
    ],
)
def test_tokens_and_other_values_are_not_card_numbers(value):
    assert not contains_pan(value)


def test_redaction_replaces_every_card_number_and_keeps_the_rest():
    payload = {"data": {"card_token": "4111 1111 1111 1111", "extra": [4111111111111111, "ok"], "ref": "prv_1"}}
    assert redact_pans(payload) == {"data": {"card_token": REDACTED, "extra": [REDACTED, "ok"], "ref": "prv_1"}}


@asynccontextmanager
async def _provider_answering(body: dict[str, object]) -> AsyncIterator[str]:
    """A provider that answers every request with `body` (200, JSON); yields its base URL."""
    content = json.dumps(body).encode()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
            + f"content-length: {len(content)}\r\n\r\n".encode()
            + content
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(("card_token", "card_last4"), [("4111111111111111", "1111"), ("tok_1", "4111-1111-1111-1111")])
async def test_a_status_answer_with_a_card_number_loses_its_card_details(card_token, card_last4):
    entitlement_id = uuid4()
    answer = {
        "idempotency_key": str(entitlement_id),
        "status": "issued",
        "provider_ref": "prv_1",
        "card_token": card_token,
        "card_last4": card_last4,
    }
    async with _provider_answering(answer) as base_url:
        adapter = build_provider("cards", {"adapter": "prepaid_card", "base_url": base_url})
        try:
            status = await adapter.status(entitlement_id)
        finally:
            await adapter.aclose()
    assert (status.status, status.provider_ref) == ("issued", "prv_1")
    assert (status.card_token, status.card_last4) == (None, None)


async def test_a_status_answer_with_a_token_keeps_it():
    entitlement_id = uuid4()
    answer = {"idempotency_key": str(entitlement_id), "status": "issued", "card_token": "tok_9", "card_last4": "4242"}
    async with _provider_answering(answer) as base_url:
        adapter = build_provider("cards", {"adapter": "prepaid_card", "base_url": base_url})
        try:
            status = await adapter.status(entitlement_id)
        finally:
            await adapter.aclose()
    assert (status.card_token, status.card_last4) == ("tok_9", "4242")
