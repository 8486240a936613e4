"""Encryption of personal data at rest: envelope keys under a master key, and keyed blind indexes.

Three layers, none of them a primitive written here (AES-256-GCM and HMAC-SHA-256 come from
`cryptography` and the standard library):
- the **master key** (`CBI_MASTER_KEY`, a key file, or a KMS adapter) never touches the database: it
  only wraps the key versions below;
- **key versions** (`crypto_keys`): a `records` version wraps the data keys; the `index` key makes the
  blind indexes. Both are stored wrapped by the master key;
- a **data key per subject** (a registered person): their fields are sealed with it and it is stored
  wrapped by a records version, beside them. Destroying it (erasure) makes every copy sealed with it
  unreadable, wherever that copy went.

A rotation adds a records version; rows name the version that wraps their key (`key_version`, a foreign
key to `crypto_keys`), so a version can only be deleted (retired) once no row uses it: the database
refuses otherwise. Processes read the active version again every `ACTIVE_TTL` seconds, and a rotation
waits longer than that before retiring the old one.

Every ciphertext is bound to where it belongs by its associated data (the subject's id and the field),
so a ciphertext copied onto another row or field does not open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import importlib
import os
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    CheckConstraint,
    Connection,
    DateTime,
    Index,
    LargeBinary,
    Row,
    String,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from cbi_service.kit.models import Base
from cbi_service.kit.secretfiles import made_once
from cbi_service.kit.settings import Settings, get_settings

KEY_BYTES = 32
NONCE_BYTES = 12
FORMAT = b"\x01"  # first byte of every ciphertext: the layout below, should it ever change
DEV_KEY_FILE = "master.key"
ACTIVE_TTL = 5.0  # seconds a process trusts its idea of the active records version
LOCK_NAMESPACE = 0x0C4B  # advisory lock taken while the first keys are created
PURPOSES = ("records", "index")


class CryptoError(Exception):
    """A key that cannot be read or does not open what it should; raised at start-up where possible."""


class MasterKey(Protocol):
    """What wraps the key versions. A KMS adapter implements these two calls remotely."""

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes: ...


class LocalMasterKey:
    """A 256-bit master key held in memory (from configuration or a key file)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise CryptoError(f"the master key must be {KEY_BYTES} bytes (base64 of them), not {len(key)}")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "LocalMasterKey(**********)"

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes:
        return _seal(self._aead, plaintext, aad)

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        return _open(self._aead, wrapped, aad)


def _seal(aead: AESGCM, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return FORMAT + nonce + aead.encrypt(nonce, plaintext, aad)


def _open(aead: AESGCM, sealed: bytes, aad: bytes) -> bytes:
    if sealed[:1] != FORMAT:
        raise CryptoError("not a ciphertext of this service")
    return aead.decrypt(sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :], aad)


def master_key(settings: Settings) -> MasterKey:
    """The configured master key: a KMS adapter, `CBI_MASTER_KEY`, `CBI_MASTER_KEY_FILE`, or in
    development only, a key generated once into the data folder. Production without one is refused."""
    if settings.kms_adapter:
        module, _, attribute = settings.kms_adapter.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError, ValueError) as exc:
            raise CryptoError(f"CBI_KMS_ADAPTER: cannot load {settings.kms_adapter!r} ({exc})") from None
        key: MasterKey = factory(settings)
        return key
    if settings.master_key is not None:
        return LocalMasterKey(_decode(settings.master_key.get_secret_value(), "CBI_MASTER_KEY"))
    if settings.master_key_file is not None:
        try:
            content = settings.master_key_file.read_bytes()
        except OSError as exc:
            raise CryptoError(f"CBI_MASTER_KEY_FILE: cannot read {settings.master_key_file} ({exc.strerror})") from None
        raw = (
            content if len(content) == KEY_BYTES else _decode(content.decode("ascii", "replace"), "CBI_MASTER_KEY_FILE")
        )
        return LocalMasterKey(raw)
    if settings.env == "production":
        raise CryptoError("set CBI_MASTER_KEY or CBI_MASTER_KEY_FILE: personal data is encrypted under it")
    return LocalMasterKey(_development_key(settings.data_dir.resolve()))


def _decode(text_value: str, name: str) -> bytes:
    try:
        raw = base64.b64decode(text_value.strip() + "=" * (-len(text_value.strip()) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES:
        raise CryptoError(f"{name} must be the base64 of {KEY_BYTES} random bytes (`cbi-service keys generate`)")
    return raw


def new_master_key() -> str:
    """A fresh master key as configuration holds it."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def _development_key(data_dir: Path) -> bytes:
    """The data folder's key, generated on first use (`made_once`)."""
    path = data_dir / DEV_KEY_FILE
    return _decode(made_once(path, lambda: new_master_key().encode()).decode(), str(path))


class CryptoKey(Base):
    """A key version, wrapped by the master key. At most one active per purpose; a `records` version
    another table still names cannot be deleted (their foreign keys)."""

    __tablename__ = "crypto_keys"
    __table_args__ = (
        CheckConstraint("purpose IN ('records', 'index')", name="purpose"),
        CheckConstraint("status IN ('active', 'retiring')", name="status"),
        Index("uq_crypto_keys_active", "purpose", unique=True, postgresql_where=text("status = 'active'")),
    )

    version: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    purpose: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(10))
    wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


def _wrap_aad(purpose: str, version: int) -> bytes:
    return f"crypto_keys:{purpose}:{version}".encode()


def _subject_aad(subject: uuid.UUID, name: str) -> bytes:
    return subject.bytes + name.encode()


@dataclass(frozen=True, slots=True)
class Sealed:
    """A subject's fields sealed under a new data key, with that key wrapped by `version`."""

    version: int
    data_key: bytes
    fields: dict[str, bytes | None]


@dataclass
class Keyring:
    """The unwrapped key versions of one database, for one process."""

    master: MasterKey
    index_key: bytes
    versions: dict[int, AESGCM]
    active_version: int
    checked_at: float = field(default_factory=time.monotonic)

    def __repr__(self) -> str:
        return f"Keyring(active_version={self.active_version}, versions={sorted(self.versions)})"

    # Blind indexes --------------------------------------------------------------------------------------

    def blind(self, purpose: str, value: str) -> bytes:
        """A keyed 128-bit digest to look `value` up by without storing it: equal values, equal digests."""
        return hmac.digest(self.index_key, purpose.encode() + b"\0" + value.encode(), hashlib.sha256)[:16]

    def key_hash(self, key: str) -> int:
        """A blocking key as the signed 64-bit integer `dedup_keys` holds (keyed: a dictionary of names
        hashed without the key finds nothing)."""
        return int.from_bytes(hmac.digest(self.index_key, key.encode(), hashlib.sha256)[:8], "big", signed=True)

    # Subjects' fields -----------------------------------------------------------------------------------

    def seal_subject(self, subject: uuid.UUID, fields: Mapping[str, bytes | None], version: int) -> Sealed:
        """Seal a subject's fields under a fresh data key wrapped by `version` (None stays None)."""
        data_key = AESGCM.generate_key(bit_length=256)
        aead = AESGCM(data_key)
        wrapped = _seal(self.versions[version], data_key, _subject_aad(subject, "data_key"))
        return Sealed(
            version,
            wrapped,
            {
                name: None if value is None else _seal(aead, value, _subject_aad(subject, name))
                for name, value in fields.items()
            },
        )

    def subject_key(self, subject: uuid.UUID, version: int, data_key: bytes) -> AESGCM:
        """The subject's data key, unwrapped (`require` the version first)."""
        return AESGCM(_open(self.versions[version], data_key, _subject_aad(subject, "data_key")))

    def open_field(self, key: AESGCM, subject: uuid.UUID, name: str, sealed: bytes) -> bytes:
        return _open(key, sealed, _subject_aad(subject, name))

    # Values sealed under a version directly (idempotency responses, uploaded files) -------------------

    def seal(self, version: int, plaintext: bytes, aad: bytes) -> bytes:
        return _seal(self.versions[version], plaintext, aad)

    def open(self, version: int, sealed: bytes, aad: bytes) -> bytes:
        return _open(self.versions[version], sealed, aad)

    # Versions -------------------------------------------------------------------------------------------

    async def active(self, session: AsyncSession) -> int:
        """The records version new data is sealed under, read again once `ACTIVE_TTL` has passed."""
        if time.monotonic() - self.checked_at > ACTIVE_TTL:
            row = (
                await session.execute(
                    select(CryptoKey.version, CryptoKey.wrapped).where(
                        CryptoKey.purpose == "records", CryptoKey.status == "active"
                    )
                )
            ).one_or_none()
            if row is not None:
                self._add("records", row.version, row.wrapped)
                self.active_version = row.version
            self.checked_at = time.monotonic()
        return self.active_version

    async def require(self, session: AsyncSession, versions: Iterable[int | None]) -> None:
        """Make sure every version named is unwrapped (one written by a rotation since start-up)."""
        missing = {v for v in versions if v is not None and v not in self.versions}
        if not missing:
            return
        rows = await session.execute(
            select(CryptoKey.version, CryptoKey.purpose, CryptoKey.wrapped).where(CryptoKey.version.in_(missing))
        )
        for row in rows:
            self._add(row.purpose, row.version, row.wrapped)
        if unknown := missing - self.versions.keys():
            raise CryptoError(f"key versions {sorted(unknown)} are not in crypto_keys")

    def _add(self, purpose: str, version: int, wrapped: bytes) -> None:
        if version not in self.versions:
            self.versions[version] = AESGCM(_unwrap(self.master, purpose, version, wrapped))


def _unwrap(master: MasterKey, purpose: str, version: int, wrapped: bytes) -> bytes:
    try:
        return master.unwrap(wrapped, _wrap_aad(purpose, version))
    except (InvalidTag, CryptoError):
        raise CryptoError(
            "the master key does not open this database's keys: it is not the key they were created under"
        ) from None


_masters: weakref.WeakKeyDictionary[object, MasterKey] = weakref.WeakKeyDictionary()
_rings: weakref.WeakKeyDictionary[object, Keyring] = weakref.WeakKeyDictionary()


def use_master_key(engine: AsyncEngine, settings: Settings) -> None:
    """Read the configured master key now (a bad one stops start-up) for every session on `engine`; the
    database's keys are loaded at first use, so a service started while the database is down still
    answers (503) and recovers with it."""
    _masters[engine.sync_engine] = master_key(settings)


async def keyring(session: AsyncSession) -> Keyring:
    """The keyring of the session's database, loaded on first use with the master key given by
    `use_master_key`, or else the environment's (commands, scripts).

    The keys are read through the caller's own connection: a process's first sealing often happens with row
    locks held (an idempotency key stored after a posting), and asking the pool for a second connection
    there could wait for ever on requests that hold the others while they wait for those locks. Only a
    database without its first keys yet has them created, in a transaction of their own."""
    engine = session.bind
    assert isinstance(engine, AsyncEngine), "sessions are bound to one engine"
    ring = _rings.get(engine.sync_engine)
    if ring is None:
        master = _masters.get(engine.sync_engine) or master_key(get_settings())
        ring = _ring_of((await session.execute(select(*_KEY_COLUMNS))).all(), master)
        if ring is None:
            ring = await load_keyring(engine, master)
        _rings[engine.sync_engine] = ring
    return ring


async def load_keyring(engine: AsyncEngine, master: MasterKey) -> Keyring:
    """Every key version, unwrapped; the first `index` and `records` keys are created in a transaction
    of their own (so they exist whatever happens to the caller's)."""
    async with engine.begin() as conn:
        return await conn.run_sync(load_keyring_sync, master)


_KEY_COLUMNS = (CryptoKey.version, CryptoKey.purpose, CryptoKey.status, CryptoKey.wrapped)


def load_keyring_sync(conn: Connection, master: MasterKey) -> Keyring:
    """`load_keyring` on a synchronous connection (migrations), in its transaction: an advisory lock
    makes processes starting together create one key of each purpose."""
    conn.execute(text("SELECT pg_advisory_xact_lock(:ns, 0)"), {"ns": LOCK_NAMESPACE})
    rows = conn.execute(select(*_KEY_COLUMNS)).all()
    for purpose in PURPOSES:
        if not any(r.purpose == purpose and r.status == "active" for r in rows):
            _create(conn, master, purpose)
    ring = _ring_of(conn.execute(select(*_KEY_COLUMNS)).all(), master)
    assert ring is not None, "both first keys were just created"
    return ring


def _ring_of(rows: Sequence[Row[int, str, str, bytes]], master: MasterKey) -> Keyring | None:
    """The keyring the `crypto_keys` rows make, or None while a purpose has no active key yet."""
    if not all(any(r.purpose == purpose and r.status == "active" for r in rows) for purpose in PURPOSES):
        return None
    versions = {
        r.version: AESGCM(_unwrap(master, r.purpose, r.version, r.wrapped)) for r in rows if r.purpose == "records"
    }
    index = next(r for r in rows if r.purpose == "index")
    active = next(r.version for r in rows if r.purpose == "records" and r.status == "active")
    return Keyring(master, _unwrap(master, "index", index.version, index.wrapped), versions, active)


def _create(conn: Connection, master: MasterKey, purpose: str) -> int:
    """A new active version: its number is taken first, since the wrapping names it."""
    version = int(conn.execute(text("SELECT nextval(pg_get_serial_sequence('crypto_keys', 'version'))")).scalar_one())
    wrapped = master.wrap(AESGCM.generate_key(bit_length=256), _wrap_aad(purpose, version))
    conn.execute(insert(CryptoKey).values(version=version, purpose=purpose, status="active", wrapped=wrapped))
    return version


async def add_records_version(session: AsyncSession, ring: Keyring) -> tuple[int, list[int]]:
    """Make a new records version the active one (the old ones retiring) in the caller's transaction;
    returns it and the versions it replaces."""
    old = list(
        (
            await session.execute(
                update(CryptoKey)
                .where(CryptoKey.purpose == "records", CryptoKey.status == "active")
                .values(status="retiring")
                .returning(CryptoKey.version)
            )
        ).scalars()
    )
    retiring = list(
        (
            await session.execute(
                select(CryptoKey.version).where(CryptoKey.purpose == "records", CryptoKey.status == "retiring")
            )
        ).scalars()
    )
    connection = await session.connection()
    version = await connection.run_sync(_create, ring.master, "records")
    await ring.require(session, [version])
    return version, sorted(set(old) | set(retiring))


async def retire(session: AsyncSession, version: int) -> bool:
    """Delete a retiring version; False (nothing deleted) while a row still names it."""
    try:
        async with session.begin_nested():
            await session.execute(delete(CryptoKey).where(CryptoKey.version == version, CryptoKey.status == "retiring"))
    except IntegrityError:
        return False
    return True


async def versions_in_use(session: AsyncSession) -> list[tuple[int, str, str]]:
    """(version, purpose, status) of every stored version, oldest first."""
    rows = await session.execute(
        select(CryptoKey.version, CryptoKey.purpose, CryptoKey.status).order_by(CryptoKey.version)
    )
    return [(r.version, r.purpose, r.status) for r in rows]
