"""The vouchers' signing keys: from the environment (PEM or seed), generated once per data folder in
development, required in production, and listed in the JWKS across a rotation."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from pydantic import SecretStr, ValidationError

from cbi_service.app import create_app
from cbi_service.kit.settings import Settings
from cbi_service.kit.signing import SigningKeyError, thumbprint
from cbi_service.vouchers.keys import DEV_KEY_FILE, voucher_keys
from cbi_service.vouchers.tokens import sign_voucher
from tests.vouchers.support import fetch_jwks, paper_voucher_batch, verify


@pytest.fixture
def configured_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def settings(settings: Settings, configured_key: Ed25519PrivateKey) -> Settings:
    """The suite's settings with a signing key set, as in production."""
    return settings.model_copy(update={"voucher_signing_key": SecretStr(_seed(configured_key))})


def _seed(key: Ed25519PrivateKey) -> str:
    return base64.b64encode(key.private_bytes_raw()).decode()


def _public_b64url(key: Ed25519PrivateKey) -> str:
    return base64.urlsafe_b64encode(key.public_key().public_bytes_raw()).rstrip(b"=").decode()


def _token(settings: Settings) -> str:
    return sign_voucher(
        voucher_keys(settings),
        voucher_id=uuid.uuid4(),
        programme_id=uuid.uuid4(),
        amount_minor=500,
        currency="USD",
        expires_at=datetime.now(UTC) + timedelta(days=1),
    )


def _kid_in_a_new_process(data_dir: os.PathLike[str]) -> str:
    code = "from cbi_service.kit.settings import Settings; from cbi_service.vouchers.keys import voucher_keys; "
    code += "print(voucher_keys(Settings()).kid)"
    env = {**os.environ, "CBI_DATA_DIR": str(data_dir), "CBI_ENV": "development"}
    env.pop("CBI_VOUCHER_SIGNING_KEY", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=60)
    return done.stdout.strip()


def test_development_generates_one_private_key_per_data_folder(tmp_path):
    data_dir = tmp_path / "data"
    kid = voucher_keys(Settings(data_dir=data_dir)).kid
    path = data_dir / DEV_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in data_dir.iterdir()) == [DEV_KEY_FILE]
    assert _kid_in_a_new_process(data_dir) == kid, "another process (serve, a worker) reads the same key"
    assert _kid_in_a_new_process(tmp_path / "elsewhere") != kid


def test_production_refuses_to_start_without_a_signing_key():
    ledger_key = SecretStr(_seed(Ed25519PrivateKey.generate()))
    with pytest.raises(ValidationError, match="CBI_VOUCHER_SIGNING_KEY"):
        Settings(env="production", ledger_signing_key=ledger_key)
    key = SecretStr(_seed(Ed25519PrivateKey.generate()))
    assert Settings(env="production", voucher_signing_key=key, ledger_signing_key=ledger_key).voucher_signing_key


def test_a_pem_key_and_its_seed_are_the_same_key(tmp_path):
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    from_pem = voucher_keys(Settings(data_dir=tmp_path, voucher_signing_key=SecretStr(pem)))
    from_seed = voucher_keys(Settings(data_dir=tmp_path, voucher_signing_key=SecretStr(_seed(key))))
    assert from_pem.kid == from_seed.kid == thumbprint(key.public_key())
    assert list(tmp_path.iterdir()) == [], "a configured key is never written to disk"


@pytest.mark.parametrize("value", ["not a key", base64.b64encode(b"short").decode(), "-----BEGIN PRIVATE KEY-----"])
def test_an_unreadable_signing_key_stops_start_up(settings, value):
    with pytest.raises(SigningKeyError, match="CBI_VOUCHER_SIGNING_KEY"):
        create_app(settings.model_copy(update={"voucher_signing_key": SecretStr(value)}))


async def test_a_rotation_keeps_vouchers_signed_before_it_verifiable(settings):
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    before = settings.model_copy(update={"voucher_signing_key": SecretStr(_seed(old))})
    old_token = _token(before)
    old_public_pem = (
        old.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    for previous in (_public_b64url(old), old_public_pem):
        after = settings.model_copy(
            update={"voucher_signing_key": SecretStr(_seed(new)), "voucher_previous_keys": [previous]}
        )
        app = create_app(after)
        async with _client(app) as client:
            response = await client.get("/v1/vouchers/keys")
            assert response.headers["cache-control"] == "public, max-age=300"
            jwks = response.json()
        assert [k["kid"] for k in jwks["keys"]] == [thumbprint(new.public_key()), thumbprint(old.public_key())]
        assert verify(old_token, jwks)["amt"] == 500
        assert verify(_token(after), jwks)["cur"] == "USD"


async def test_vouchers_are_signed_with_the_configured_key(
    client, api_key_factory, session_factory, settings, configured_key
):
    key = configured_key
    actors, _, batch = await paper_voucher_batch(client, api_key_factory, session_factory, settings, 1)
    jwks = await fetch_jwks(client)
    assert [k["kid"] for k in jwks["keys"]] == [thumbprint(key.public_key())]
    response = await client.get("/v1/entitlements", params={"batch_id": batch["id"]}, headers=actors.auditor)
    (item,) = response.json()["items"]
    assert verify(item["voucher_token"], jwks)["vid"] == item["id"]
    assert not settings.data_dir.exists(), "no key was generated"


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
