"""kit.crypto: where the master key comes from, what a wrong one does, and what a ciphertext is bound to."""

from __future__ import annotations

import base64
import os
import stat
import uuid

import pytest
from cryptography.exceptions import InvalidTag
from pydantic import SecretStr, ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from cbi_service.kit import crypto
from cbi_service.kit.db import make_session_factory
from cbi_service.kit.settings import Settings, to_asyncpg_url

KEY = base64.b64encode(bytes(range(32))).decode()


class RecordingKms:
    """A stand-in for a KMS adapter, loaded by name as a real one would be: it wraps with a key it holds."""

    calls: list[str] = []

    def __init__(self, settings: Settings) -> None:
        self._key = crypto.LocalMasterKey(bytes(32))

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes:
        RecordingKms.calls.append("wrap")
        return self._key.wrap(plaintext, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        RecordingKms.calls.append("unwrap")
        return self._key.unwrap(wrapped, aad)


def test_the_master_key_comes_from_configuration_a_file_or_the_development_folder(tmp_path):
    configured = crypto.master_key(Settings(master_key=SecretStr(KEY), data_dir=tmp_path))
    sealed = configured.wrap(b"k", b"aad")
    key_file = tmp_path / "master.key"
    key_file.write_text(KEY + "\n")
    from_file = crypto.master_key(Settings(master_key=None, master_key_file=key_file, data_dir=tmp_path / "x"))
    assert from_file.unwrap(sealed, b"aad") == b"k"

    folder = tmp_path / "dev"
    first = crypto.master_key(Settings(master_key=None, data_dir=folder))
    again = crypto.master_key(Settings(master_key=None, data_dir=folder))
    assert again.unwrap(first.wrap(b"k", b"a"), b"a") == b"k"
    assert stat.S_IMODE(os.stat(folder / crypto.DEV_KEY_FILE).st_mode) == 0o600
    assert repr(first) == "LocalMasterKey(**********)"


def test_production_without_a_master_key_is_refused_naming_the_variable():
    with pytest.raises(ValidationError, match="CBI_MASTER_KEY"):
        Settings(
            env="production", master_key=None, voucher_signing_key=SecretStr(KEY), ledger_signing_key=SecretStr(KEY)
        )


@pytest.mark.parametrize("value", ["", "short", base64.b64encode(b"x" * 31).decode(), "not base64 !!"])
def test_a_malformed_master_key_is_refused_with_how_to_make_one(tmp_path, value):
    with pytest.raises(crypto.CryptoError, match="keys generate"):
        crypto.master_key(Settings(master_key=SecretStr(value), data_dir=tmp_path))


def test_a_kms_adapter_is_loaded_by_name(tmp_path):
    settings = Settings(kms_adapter=f"{__name__}:RecordingKms", data_dir=tmp_path)
    key = crypto.master_key(settings)
    assert key.unwrap(key.wrap(b"k", b"a"), b"a") == b"k"
    assert RecordingKms.calls[-2:] == ["wrap", "unwrap"]
    with pytest.raises(crypto.CryptoError, match="CBI_KMS_ADAPTER"):
        crypto.master_key(Settings(kms_adapter="no.such.module:Factory", data_dir=tmp_path))


async def test_another_master_key_cannot_open_the_database_keys(database_url):
    engine = create_async_engine(to_asyncpg_url(database_url))
    try:
        await crypto.load_keyring(engine, crypto.LocalMasterKey(bytes(range(32))))
        with pytest.raises(crypto.CryptoError, match="not the key they were created under"):
            await crypto.load_keyring(engine, crypto.LocalMasterKey(bytes(32)))
    finally:
        await engine.dispose()


async def test_a_ciphertext_opens_only_where_it_was_sealed_and_digests_need_the_index_key(database_url):
    engine = create_async_engine(to_asyncpg_url(database_url))
    try:
        ring = await crypto.load_keyring(engine, crypto.LocalMasterKey(bytes(range(32))))
    finally:
        await engine.dispose()
    alice, bob = uuid.uuid4(), uuid.uuid4()
    sealed = ring.seal_subject(alice, {"personal": b"Alice", "profile": b"alice"}, ring.active_version)
    key = ring.subject_key(alice, sealed.version, sealed.data_key)
    assert ring.open_field(key, alice, "personal", sealed.fields["personal"]) == b"Alice"  # type: ignore[arg-type]
    with pytest.raises(InvalidTag):  # moved to another field
        ring.open_field(key, alice, "profile", sealed.fields["personal"])  # type: ignore[arg-type]
    with pytest.raises(InvalidTag):  # moved to another person's row, with its key
        ring.subject_key(bob, sealed.version, sealed.data_key)
    assert b"Alice" not in sealed.fields["personal"]  # type: ignore[operator]
    assert ring.blind("external_ref", "R-1") == ring.blind("external_ref", "R-1")
    other = crypto.Keyring(ring.master, bytes(32), ring.versions, ring.active_version)
    assert other.blind("external_ref", "R-1") != ring.blind("external_ref", "R-1")
    assert other.key_hash("n:maria") != ring.key_hash("n:maria")


async def test_a_process_reads_its_keys_on_the_callers_connection_and_creates_only_the_first(database_url):
    """A process's first sealing often comes with row locks held (an idempotency key stored after a posting):
    there, waiting for a second pooled connection could wait on the very requests that wait for those locks.
    So an engine whose one connection the caller holds still gets its keyring; only a database without keys
    has its first ones created, on a connection of their own."""
    engine = create_async_engine(to_asyncpg_url(database_url), pool_size=2, max_overflow=0, pool_timeout=1)
    other = create_async_engine(to_asyncpg_url(database_url), pool_size=1, max_overflow=0, pool_timeout=1)
    try:
        factory = make_session_factory(engine)
        async with factory() as session:
            created = await crypto.keyring(session)  # no keys yet: the first are created and committed
            await session.rollback()
        async with make_session_factory(other)() as session, session.begin():
            await session.execute(text("SELECT 1"))  # the pool's only connection is the caller's
            ring = await crypto.keyring(session)
        assert ring.active_version == created.active_version
        assert ring.seal(ring.active_version, b"x", b"a") != b"x"
        assert created.open(created.active_version, ring.seal(ring.active_version, b"x", b"a"), b"a") == b"x"
    finally:
        await engine.dispose()
        await other.dispose()
