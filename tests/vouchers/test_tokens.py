"""What makes a presented voucher token trusted: its signature under a key of the ring, or being, byte for
byte, the token the service issued for the voucher it names, and in both cases a key still in the ring."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

from cbi_service.kit.settings import Settings
from cbi_service.kit.signing import SigningKeys
from cbi_service.vouchers.keys import voucher_keys
from cbi_service.vouchers.tokens import InvalidVoucherToken, read_token, sign_voucher, trusted


def _ring(key: Ed25519PrivateKey, *previous: Ed25519PrivateKey) -> SigningKeys:
    seed = base64.b64encode(key.private_bytes_raw()).decode()
    olds = [base64.urlsafe_b64encode(p.public_key().public_bytes_raw()).decode() for p in previous]
    settings = Settings(voucher_signing_key=SecretStr(seed), voucher_previous_keys=olds, data_dir=Path("/nonexistent"))
    return voucher_keys(settings)


def _token(keys: SigningKeys, amount_minor: int = 5_000) -> str:
    return sign_voucher(
        keys,
        voucher_id=uuid.uuid4(),
        programme_id=uuid.uuid4(),
        amount_minor=amount_minor,
        currency="USD",
        expires_at=datetime.now(UTC) + timedelta(days=1),
    )


def _raised(token: str) -> str:
    header, claims, signature = token.split(".")
    data = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    data["amt"] *= 100
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def test_the_issued_token_is_trusted_and_a_tampered_one_is_not_even_beside_it():
    keys = _ring(Ed25519PrivateKey.generate())
    issued = _token(keys)
    assert trusted(keys, read_token(issued), issued) == trusted(keys, read_token(issued), None)
    tampered = _raised(issued)
    with pytest.raises(InvalidVoucherToken, match="signature"):
        trusted(keys, read_token(tampered), issued)
    with pytest.raises(InvalidVoucherToken, match="signature"):
        trusted(keys, read_token(tampered), None)


def test_a_token_other_than_the_issued_one_is_trusted_only_on_its_signature():
    keys = _ring(Ed25519PrivateKey.generate())
    issued, other = _token(keys), _token(keys, amount_minor=7_000)
    assert trusted(keys, read_token(other), issued).amount_minor == 7_000
    stranger = _token(_ring(Ed25519PrivateKey.generate()))
    with pytest.raises(InvalidVoucherToken, match="no key"):
        trusted(keys, read_token(stranger), issued)


def test_a_key_dropped_from_the_ring_revokes_even_the_issued_tokens_it_signed():
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    issued = _token(_ring(old))
    assert trusted(_ring(new, old), read_token(issued), issued).amount_minor == 5_000
    with pytest.raises(InvalidVoucherToken, match="no key"):
        trusted(_ring(new), read_token(issued), issued)


@pytest.mark.parametrize("text", ["", "a.b", "a.b.c", "e30.e30.", "not a token at all", "é.é.é"])
def test_what_cannot_be_a_token_is_refused_before_anything_is_looked_up(text):
    with pytest.raises(InvalidVoucherToken):
        read_token(text)
