"""Ed25519 signing keys named by their JWK thumbprint, and the JWKS that lets others verify offline.

A key ring is the key that signs now and the public halves of the keys that signed before a rotation, so
that what they signed stays verifiable. The private key comes from a secret setting (PKCS#8 PEM or the
base64 of its 32-byte seed); production refuses to start without it (see `kit.settings`), so it never
sits in the database or on a disk the service chose. In development with none set, one is generated once
into the data folder (mode 0600) and shared by every process using that folder.

Each key's `kid` is its RFC 7638 JWK thumbprint: it names the key version without any registry of names.
Vouchers (`vouchers.keys`) and ledger export manifests (`exports.keys`) each have a ring of their own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import SecretStr

from cbi_service.kit.secretfiles import made_once

ALGORITHM = "EdDSA"


class SigningKeyError(ValueError):
    """A configured signing key that cannot be read; raised at start-up, naming the variable."""


@dataclass(frozen=True)
class KeySource:
    """Where a key ring comes from: the variables that configure it, and the development key's file."""

    signing_variable: str
    previous_variable: str
    development_file: str


@dataclass(frozen=True)
class SigningKeys:
    """The key that signs, and every public key something still in circulation may have been signed with."""

    signing: Ed25519PrivateKey
    kid: str
    verifying: tuple[tuple[str, Ed25519PublicKey], ...]
    """(kid, key), the signing key's public half first."""

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {"keys": [{**_jwk(key), "kid": kid, "alg": ALGORITHM, "use": "sig"} for kid, key in self.verifying]}


def signing_keys(source: KeySource, secret: SecretStr | None, previous: list[str], data_dir: Path) -> SigningKeys:
    """The configured ring (or, in development with no key set, the data folder's), read once per process."""
    text = secret.get_secret_value() if secret is not None else None
    return _load(source, text or None, tuple(previous), data_dir.resolve())


@lru_cache(maxsize=8)
def _load(source: KeySource, secret: str | None, previous: tuple[str, ...], data_dir: Path) -> SigningKeys:
    signing = _private_key(source, secret) if secret is not None else _development_key(source, data_dir)
    verifying = [signing.public_key(), *(_public_key(source, text) for text in previous)]
    keyed: dict[str, Ed25519PublicKey] = {}
    for key in verifying:
        keyed.setdefault(thumbprint(key), key)
    kid = thumbprint(signing.public_key())
    return SigningKeys(signing=signing, kid=kid, verifying=tuple(keyed.items()))


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


def _private_key(source: KeySource, text: str) -> Ed25519PrivateKey:
    name = source.signing_variable
    if "-----BEGIN" in text:
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise SigningKeyError(f"{name} is not a readable unencrypted PEM private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"{name} must be an Ed25519 key")
        return key
    seed = _raw(text)
    if seed is None:
        raise SigningKeyError(f"{name} must be a PEM Ed25519 key or the base64 of a 32-byte seed")
    return Ed25519PrivateKey.from_private_bytes(seed)


def _public_key(source: KeySource, text: str) -> Ed25519PublicKey:
    name = source.previous_variable
    if "-----BEGIN" in text:
        try:
            key = serialization.load_pem_public_key(text.encode())
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise SigningKeyError(f"{name} holds an unreadable PEM public key") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError(f"{name} must hold Ed25519 public keys")
        return key
    raw = _raw(text)
    if raw is None:
        raise SigningKeyError(f"{name} entries must be PEM public keys or base64url of 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def _development_key(source: KeySource, data_dir: Path) -> Ed25519PrivateKey:
    """The data folder's key, generated on first use (`made_once`)."""
    path = data_dir / source.development_file
    pem = made_once(
        path,
        lambda: Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{path} is not an Ed25519 key")
    return key
