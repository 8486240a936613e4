"""The `signature` of a G2P Connect message: Ed25519 over the digest of its `header` and `message`.

The published API gives the field as one string, in the form of its example

    Signature: namespace="g2p", kidId="{sender_id}|{key_id}|ed25519", algorithm="ed25519",
    created="1606970629", expires="1607030629", headers="(created) (expires) digest", signature="<base64>"

and says it is the "signature of {header}+{message} verified using sender's signing public key". The signed
text is therefore the three lines named by `headers`:

    (created): <created>
    (expires): <expires>
    digest: BLAKE-512=<base64 of the BLAKE2b-512 of the canonical JSON of {"header": ..., "message": ...}>

Canonical JSON is the value with its object keys sorted, no insignificant whitespace, UTF-8 text (what RFC 8785
gives for the strings, integers and booleans G2P messages hold), so the signature survives re-serialisation
by any JSON library between the signer and the verifier. A message without `message` signs `{"header": ...}`.
Keys are Ed25519: a private key as PKCS#8 PEM or the base64 of its 32-byte seed, a public key as PEM or the
base64 (standard or URL-safe) of its 32 raw bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "ed25519"
SIGNED_HEADERS = "(created) (expires) digest"
TOLERANCE_SECONDS = 300
"""How far `created` may be from now, either way (as for Standard Webhooks, CONTRACT §8)."""
MAX_SIGNATURE_LENGTH = 1024
_PARAMETER = re.compile(r'([A-Za-z]+)="([^"]*)"')


class SignatureError(ValueError):
    """A signature that is missing, malformed, expired or does not verify with any of the keys."""


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _signed_part(header: Mapping[str, Any], message: Any) -> dict[str, Any]:
    return {"header": header} if message is None else {"header": header, "message": message}


def _signing_text(created: int, expires: int, header: Mapping[str, Any], message: Any) -> bytes:
    digest = base64.b64encode(hashlib.blake2b(canonical(_signed_part(header, message)), digest_size=64).digest())
    return f"(created): {created}\n(expires): {expires}\ndigest: BLAKE-512={digest.decode()}".encode()


@dataclass(frozen=True, slots=True)
class Signer:
    """Signs the messages one party sends, under `{sender_id}|{key_id}|ed25519`."""

    key: Ed25519PrivateKey
    sender_id: str
    key_id: str = "1"
    lifetime_seconds: int = TOLERANCE_SECONDS

    def sign(self, header: Mapping[str, Any], message: Any, *, now: float | None = None) -> str:
        created = int(time.time() if now is None else now)
        expires = created + self.lifetime_seconds
        value = base64.b64encode(self.key.sign(_signing_text(created, expires, header, message))).decode()
        return (
            f'Signature: namespace="g2p", kidId="{self.sender_id}|{self.key_id}|{ALGORITHM}", '
            f'algorithm="{ALGORITHM}", created="{created}", expires="{expires}", headers="{SIGNED_HEADERS}", '
            f'signature="{value}"'
        )

    def signed(self, header: Mapping[str, Any], message: Any) -> dict[str, Any]:
        """The whole envelope: `signature`, `header` and (when there is one) `message`."""
        return {"signature": self.sign(header, message), **_signed_part(header, message)}


@dataclass(frozen=True, slots=True)
class Verifier:
    """Accepts a message signed with any of the other party's current keys (several while one is rotated)."""

    keys: tuple[Ed25519PublicKey, ...]

    def verify(self, signature: object, header: Mapping[str, Any], message: Any, *, now: float | None = None) -> int:
        """The signature's `created` time once it verifies; raises `SignatureError` otherwise."""
        if not isinstance(signature, str) or not signature:
            raise SignatureError("the message has no signature")
        if len(signature) > MAX_SIGNATURE_LENGTH:
            raise SignatureError("the signature is too long")
        parameters = dict(_PARAMETER.findall(signature.removeprefix("Signature:")))
        if parameters.get("algorithm", "").lower() != ALGORITHM:
            raise SignatureError(f"the signature's algorithm must be {ALGORITHM}")
        if parameters.get("headers") != SIGNED_HEADERS:
            raise SignatureError(f'the signature must cover headers="{SIGNED_HEADERS}"')
        try:
            created, expires = int(parameters["created"]), int(parameters["expires"])
            value = base64.b64decode(parameters["signature"], validate=True)
        except (KeyError, ValueError, binascii.Error):
            raise SignatureError("the signature lacks a readable created, expires or signature value") from None
        current = time.time() if now is None else now
        if abs(current - created) > TOLERANCE_SECONDS or current > expires or expires < created:
            raise SignatureError("the signature was created outside the tolerance or has expired")
        try:
            text = _signing_text(created, expires, header, message)
        except ValueError:
            raise SignatureError("the message holds a value JSON cannot carry") from None
        for key in self.keys:
            try:
                key.verify(value, text)
            except InvalidSignature:
                continue
            return created
        raise SignatureError("the signature does not verify with the configured keys")


def private_key(text: str) -> Ed25519PrivateKey:
    """A PKCS#8 PEM Ed25519 key or the base64 of its 32-byte seed; raises ValueError."""
    if "-----BEGIN" in text:
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise ValueError("not a readable unencrypted PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("not an Ed25519 key")
        return key
    return Ed25519PrivateKey.from_private_bytes(_raw32(text))


def public_key(text: str) -> Ed25519PublicKey:
    """A PEM Ed25519 public key or the base64 (either alphabet) of its 32 raw bytes; raises ValueError."""
    if "-----BEGIN" in text:
        try:
            key = serialization.load_pem_public_key(text.encode())
        except (ValueError, UnsupportedAlgorithm):
            raise ValueError("not a readable PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 key")
        return key
    return Ed25519PublicKey.from_public_bytes(_raw32(text))


def public_text(key: Ed25519PrivateKey) -> str:
    """The public half, as the base64url of its raw bytes (the form `public_key` reads)."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw).decode()


def seed_text(key: Ed25519PrivateKey) -> str:
    """The private key as the base64 of its 32-byte seed (the form `private_key` reads)."""
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return base64.b64encode(raw).decode()


def verifier(texts: Sequence[str]) -> Verifier:
    return Verifier(tuple(public_key(text) for text in texts))


def _raw32(text: str) -> bytes:
    compact = "".join(text.split()).replace("-", "+").replace("_", "/")
    try:
        data = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not PEM, nor the base64 of 32 bytes") from None
    if len(data) != 32:
        raise ValueError("not PEM, nor the base64 of 32 bytes")
    return data
