"""The export manifest: a signed statement of what an export of a window must contain (contract §10).

The service tallies the window from the database (`exports.service`), `cbi-service ledger verify
--manifest` tallies the file (`exports.verify`), both with `Tally`, and the two statements must be equal.
Within a chain stripe a window is a run of consecutive `seq`, so the stripes' first and last transactions
and the chain check prove that nothing was cut from either end or the middle; the digest of every
transaction's hash in export order (`transactions_sha256`) proves it too where the chain cannot, in an
export filtered by programme. The statement holds ids, chain fields, counts and sums: no personal data.

The signed document is `{"manifest": {...}, "signature": JWS}`: a JWS (RFC 7515, EdDSA over Ed25519,
protected header `alg`, `kid`, `typ`, `b64: false`) with a detached unencoded payload (RFC 7797), the manifest
object serialised canonically: UTF-8 JSON, keys sorted, no whitespace, which for its content (ASCII text,
integers, null) is RFC 8785's canonical form. `kid` names the key (`kit.signing`) and equals the
manifest's `key_id`; the keys are published at `GET /v1/ledger/export/manifest/keys`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cbi_service.kit.signing import ALGORITHM, SigningKeys, thumbprint

FORMAT = "cbi-ledger-export-manifest/1"
MEDIA_TYPE = "cbi-ledger-export-manifest+json"

#: The fields the file must reproduce; the rest (`format`, `key_id`, `generated_at`, `window`) describe the
#: statement itself.
TALLIED = (
    "transactions",
    "entries",
    "first_transaction",
    "last_transaction",
    "currencies",
    "stripes",
    "transactions_sha256",
)


class ManifestError(Exception):
    """A manifest or key file that cannot be read as one."""


class ManifestSignatureInvalid(Exception):
    """The manifest was not signed by any of the keys given, or was changed after it was signed."""


@dataclass(frozen=True, slots=True)
class TransactionHead:
    """A transaction's place in the chain, as the export shows it (ids and digests lowercase hex)."""

    id: str
    chain: int
    seq: int
    posted_at: str
    prev_hash: str
    hash: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "chain": self.chain,
            "seq": self.seq,
            "posted_at": self.posted_at,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass
class _Stripe:
    first: TransactionHead
    last: TransactionHead
    transactions: int = 1


@dataclass
class Tally:
    """What a run of transactions in export order adds up to: fed by the database or by the file."""

    transactions: int = 0
    entries: int = 0
    first: TransactionHead | None = None
    last: TransactionHead | None = None
    #: Per currency: [entries, debits, credits] in minor units (debits as a positive sum).
    currencies: dict[str, list[int]] = field(default_factory=dict)
    stripes: dict[int, _Stripe] = field(default_factory=dict)
    _digest: Any = field(default_factory=hashlib.sha256)

    def add_transaction(self, head: TransactionHead) -> None:
        self.transactions += 1
        self.first = self.first or head
        self.last = head
        stripe = self.stripes.get(head.chain)
        if stripe is None:
            self.stripes[head.chain] = _Stripe(head, head)
        else:
            stripe.last = head
            stripe.transactions += 1
        self._digest.update(bytes.fromhex(head.hash))

    def add_entries(self, currency: str, entries: int, debits: int, credits: int) -> None:
        self.entries += entries
        totals = self.currencies.setdefault(currency, [0, 0, 0])
        totals[0] += entries
        totals[1] += debits
        totals[2] += credits

    def statement(self) -> dict[str, Any]:
        """The `TALLIED` fields of a manifest."""
        return {
            "transactions": self.transactions,
            "entries": self.entries,
            "first_transaction": self.first.as_json() if self.first else None,
            "last_transaction": self.last.as_json() if self.last else None,
            "currencies": [
                {"currency": code, "entries": n, "debits_minor": str(debits), "credits_minor": str(credits)}
                for code, (n, debits, credits) in sorted(self.currencies.items())
            ],
            "stripes": [
                {
                    "chain": chain,
                    "transactions": stripe.transactions,
                    "first": _link(stripe.first),
                    "last": _link(stripe.last),
                }
                for chain, stripe in sorted(self.stripes.items())
            ],
            "transactions_sha256": self._digest.hexdigest(),
        }


def _link(head: TransactionHead) -> dict[str, Any]:
    return {"id": head.id, "seq": head.seq, "prev_hash": head.prev_hash, "hash": head.hash}


def canonical(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(keys: SigningKeys, manifest: dict[str, Any]) -> dict[str, Any]:
    """The signed document of a manifest whose `key_id` is `keys.kid`."""
    signature = jwt.api_jws.encode(
        canonical(manifest),
        keys.signing,
        algorithm=ALGORITHM,
        headers={"kid": keys.kid, "typ": MEDIA_TYPE},
        is_payload_detached=True,
    )
    return {"manifest": manifest, "signature": signature}


def read_public_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    """Ed25519 public keys by thumbprint from a JWKS (as `GET /v1/ledger/export/manifest/keys` serves it), a
    single JWK, or a PEM public key. The `kid` is recomputed, never taken from the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read the keys: {exc}") from None
    if "-----BEGIN" in text:
        try:
            key = serialization.load_pem_public_key(text.encode())
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise ManifestError(f"not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ManifestError("the PEM key is not an Ed25519 key")
        return {thumbprint(key): key}
    try:
        document = json.loads(text)
    except ValueError:
        raise ManifestError("the keys are neither a JWKS nor a PEM public key") from None
    jwks = document.get("keys") if isinstance(document, dict) and "keys" in document else [document]
    if not isinstance(jwks, list):
        raise ManifestError("a JWKS's keys must be a list")
    keys: dict[str, Ed25519PublicKey] = {}
    for jwk in jwks:
        if isinstance(jwk, dict) and jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
            raw = _b64url_decode(jwk.get("x"))
            if raw is not None and len(raw) == 32:
                key = Ed25519PublicKey.from_public_bytes(raw)
                keys[thumbprint(key)] = key
    if not keys:
        raise ManifestError("the keys hold no Ed25519 public key")
    return keys


def _b64url_decode(value: object) -> bytes | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None


def read_signed(path: Path, keys: dict[str, Ed25519PublicKey]) -> dict[str, Any]:
    """The manifest of a signed document, once its signature checks against one of `keys`."""
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"not a manifest: {exc}") from None
    if not isinstance(document, dict):
        raise ManifestError("not a manifest: not a JSON object")
    manifest, signature = document.get("manifest"), document.get("signature")
    if not isinstance(manifest, dict) or not isinstance(signature, str):
        raise ManifestError("not a manifest: it needs a manifest object and a signature")
    if manifest.get("format") != FORMAT:
        raise ManifestError(f"not a manifest of format {FORMAT}")
    missing = [name for name in TALLIED if name not in manifest]
    if missing:
        raise ManifestError(f"not a manifest: fields missing: {', '.join(missing)}")
    try:
        kid = jwt.get_unverified_header(signature).get("kid")
    except jwt.InvalidTokenError:
        raise ManifestSignatureInvalid("the signature is not a JWS") from None
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise ManifestSignatureInvalid(f"signed by key {kid!r}, which is not among the keys given")
    if manifest.get("key_id") != kid:
        raise ManifestSignatureInvalid("the manifest's key_id is not the key that signed it")
    try:
        jwt.api_jws.decode_complete(signature, key, algorithms=[ALGORITHM], detached_payload=canonical(manifest))
    except jwt.InvalidTokenError:
        raise ManifestSignatureInvalid("the signature does not match: the manifest was changed after signing") from None
    return manifest


def differences(manifest: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """What the file's statement (`Tally.statement`) lacks or adds against the manifest, the ends first."""
    problems = [
        *_end(manifest["first_transaction"], found["first_transaction"], "first"),
        *_end(manifest["last_transaction"], found["last_transaction"], "last"),
    ]
    for name in ("transactions", "entries"):
        if found[name] != manifest[name]:
            problems.append(f"{found[name]} {name} in the file, the manifest has {manifest[name]}")
    problems += _by_key(manifest["currencies"], found["currencies"], "currency", _currency)
    problems += _by_key(manifest["stripes"], found["stripes"], "chain", _stripe)
    if not problems and found["transactions_sha256"] != manifest["transactions_sha256"]:
        problems.append("the transactions are not the manifest's (transactions_sha256 differs)")
    return problems


def _place(head: dict[str, Any]) -> tuple[str, int, int]:
    """Export order: posting time, then stripe and seq (the timestamp text has a fixed width)."""
    return (str(head["posted_at"]), int(head["chain"]), int(head["seq"]))


def _named(head: dict[str, Any]) -> str:
    return f"{head['id']} (chain {head['chain']}, seq {head['seq']}, posted {head['posted_at']})"


def _end(expected: dict[str, Any] | None, found: dict[str, Any] | None, end: str) -> list[str]:
    if expected == found:
        return []
    if expected is None:
        return [f"the manifest's window holds no transaction, the file does: {_named(found or {})}"]
    if found is None:
        return [f"{end} transaction missing: expected {_named(expected)}, the file holds none"]
    cut = _place(found) > _place(expected) if end == "first" else _place(found) < _place(expected)
    if cut:
        return [f"{end} transaction missing: expected {_named(expected)}, the file's is {_named(found)}"]
    if _place(found) != _place(expected):
        beyond = "before" if end == "first" else "after"
        return [f"transaction {beyond} the manifest's {end} {expected['id']}: {_named(found)}"]
    return [f"{end} transaction differs from the manifest's: expected {_named(expected)}, found {found['id']}"]


def _by_key(expected: list[Any], found: list[Any], key: str, compare: Any) -> list[str]:
    wanted = {item[key]: item for item in expected}
    seen = {item[key]: item for item in found}
    problems: list[str] = []
    for name in sorted(wanted.keys() | seen.keys(), key=str):
        problems += compare(name, wanted.get(name), seen.get(name))
    return problems


def _currency(code: str, expected: dict[str, Any] | None, found: dict[str, Any] | None) -> list[str]:
    if expected is None:
        return [f"{code}: in the file, not in the manifest"]
    if found is None:
        return [f"{code}: missing, the manifest has {expected['entries']} entries in it"]
    return [
        f"{code}: {name.replace('_minor', '')} {found[name]} minor units in the file, the manifest has {expected[name]}"
        if name != "entries"
        else f"{code}: {found[name]} entries in the file, the manifest has {expected[name]}"
        for name in ("entries", "debits_minor", "credits_minor")
        if found[name] != expected[name]
    ]


def _stripe(chain: int, expected: dict[str, Any] | None, found: dict[str, Any] | None) -> list[str]:
    if expected is None:
        return [f"chain {chain}: in the file, not in the manifest"]
    if found is None:
        return [f"chain {chain}: missing, the manifest has {expected['transactions']} transactions on it"]
    problems = []
    for end in ("first", "last"):
        want, got = expected[end], found[end]
        if want != got:
            problems.append(
                f"chain {chain}: {end} transaction is seq {got['seq']} ({got['id']}), "
                f"the manifest's is seq {want['seq']} ({want['id']})"
            )
    if found["transactions"] != expected["transactions"]:
        problems.append(
            f"chain {chain}: {found['transactions']} transactions in the file, the manifest has "
            f"{expected['transactions']}"
        )
    return problems
