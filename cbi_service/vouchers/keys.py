"""The Ed25519 keys paper vouchers are signed with, and the JWKS merchants' phones verify them against.

The signing key comes from `CBI_VOUCHER_SIGNING_KEY`; production refuses to start without it (see
`kit.settings`), so the private key never sits in the database or on a disk the service chose. In
development with none set, one is generated once into `CBI_DATA_DIR/voucher-signing-key.pem` (mode 0600)
and shared by every process using that folder. A rotation sets the new key and moves the old one's public
half to `CBI_VOUCHER_PREVIOUS_KEYS`: the JWKS keeps listing it, so vouchers printed before stay verifiable.

Each key's `kid` is its RFC 7638 JWK thumbprint: it names the key version without any registry of names.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cbi_service.kit.settings import Settings

ALGORITHM = "EdDSA"
DEV_KEY_FILE = "voucher-signing-key.pem"


class VoucherKeyError(ValueError):
    """A configured voucher key that cannot be read; raised at start-up, naming the variable."""


@dataclass(frozen=True)
class VoucherKeys:
    """The key that signs new vouchers, and every public key a voucher in circulation may carry."""

    signing: Ed25519PrivateKey
    kid: str
    verifying: tuple[tuple[str, Ed25519PublicKey], ...]
    """(kid, key), the signing key's public half first."""

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [{**_jwk(key), "kid": kid, "alg": ALGORITHM, "use": "sig"} for kid, key in self.verifying]}


def voucher_keys(settings: Settings) -> VoucherKeys:
    """The configured keys (or, in development with none set, the data folder's), read once per process."""
    secret = settings.voucher_signing_key.get_secret_value() if settings.voucher_signing_key is not None else None
    return _load(secret or None, tuple(settings.voucher_previous_keys), settings.data_dir.resolve())


@lru_cache(maxsize=8)
def _load(secret: str | None, previous: tuple[str, ...], data_dir: Path) -> VoucherKeys:
    signing = _private_key(secret) if secret is not None else _development_key(data_dir)
    verifying = [signing.public_key(), *(_public_key(text) for text in previous)]
    keyed: dict[str, Ed25519PublicKey] = {}
    for key in verifying:
        keyed.setdefault(thumbprint(key), key)
    kid = thumbprint(signing.public_key())
    return VoucherKeys(signing=signing, kid=kid, verifying=tuple(keyed.items()))


def thumbprint(key: Ed25519PublicKey) -> str:
    """RFC 7638: SHA-256 of the JWK's required members, sorted, without whitespace; base64url."""
    canonical = json.dumps(_jwk(key), sort_keys=True, separators=(",", ":")).encode()
    return _b64url(hashlib.sha256(canonical).digest())


def _jwk(key: Ed25519PublicKey) -> dict[str, str]:
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(key.public_bytes_raw())}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw(text: str) -> bytes | None:
    """32 bytes from base64 (standard or URL-safe alphabet, padding optional), or None."""
    compact = "".join(text.split())
    try:
        data = base64.b64decode(compact.replace("-", "+").replace("_", "/") + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if len(data) == 32 else None


def _private_key(text: str) -> Ed25519PrivateKey:
    if "-----BEGIN" in text:
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise VoucherKeyError("CBI_VOUCHER_SIGNING_KEY is not a readable unencrypted PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise VoucherKeyError("CBI_VOUCHER_SIGNING_KEY must be an Ed25519 key")
        return key
    seed = _raw(text)
    if seed is None:
        raise VoucherKeyError("CBI_VOUCHER_SIGNING_KEY must be a PEM Ed25519 key or the base64 of a 32-byte seed")
    return Ed25519PrivateKey.from_private_bytes(seed)


def _public_key(text: str) -> Ed25519PublicKey:
    if "-----BEGIN" in text:
        try:
            key = serialization.load_pem_public_key(text.encode())
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise VoucherKeyError("CBI_VOUCHER_PREVIOUS_KEYS holds an unreadable PEM public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise VoucherKeyError("CBI_VOUCHER_PREVIOUS_KEYS must hold Ed25519 public keys")
        return key
    raw = _raw(text)
    if raw is None:
        raise VoucherKeyError("CBI_VOUCHER_PREVIOUS_KEYS entries must be PEM public keys or base64url of 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def _development_key(data_dir: Path) -> Ed25519PrivateKey:
    """The data folder's key, generated on first use. Written to a private temporary file and linked into
    place, so two processes starting together agree on one key and neither reads a half-written file."""
    path = data_dir / DEV_KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd, temporary = tempfile.mkstemp(dir=data_dir, prefix=".voucher-key-")  # created with mode 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise VoucherKeyError(f"{path} is not an Ed25519 key")
    return key
