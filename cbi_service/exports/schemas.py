from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, Field


class ManifestTransaction(BaseModel):
    """A transaction's place in the hash chain, as the export's rows show it."""

    id: uuid.UUID
    chain: int = Field(description="The chain stripe.")
    seq: int = Field(description="Its position in the stripe, from 1.")
    posted_at: str = Field(description="RFC 3339 UTC with microseconds, as in the export.")
    prev_hash: str = Field(description="The previous transaction's hash in the stripe, hex.")
    hash: str = Field(description="Its own hash, hex.")


class ManifestLink(BaseModel):
    id: uuid.UUID
    seq: int
    prev_hash: str
    hash: str


class ManifestStripe(BaseModel):
    """One chain stripe's run of transactions in the window (consecutive `seq` unless filtered by programme)."""

    chain: int
    transactions: int
    first: ManifestLink
    last: ManifestLink


class ManifestCurrency(BaseModel):
    """The entries in one currency. Every transaction sums to zero, so debits equal credits."""

    currency: str
    entries: int
    debits_minor: str = Field(description="Sum of the negative amounts, as a positive integer in minor units.")
    credits_minor: str = Field(description="Sum of the positive amounts in minor units.")


class ManifestWindow(BaseModel):
    from_: str | None = Field(alias="from", description="Inclusive, RFC 3339 UTC; null: from the first.")
    to: str | None = Field(description="Exclusive, RFC 3339 UTC; null: up to the snapshot.")
    programme_id: uuid.UUID | None


class ExportManifest(BaseModel):
    format: Literal["cbi-ledger-export-manifest/1"]
    key_id: str = Field(description="The `kid` of the key that signed it, in GET /v1/ledger/export/manifest/keys.")
    generated_at: str = Field(description="When the snapshot it was read from was taken.")
    window: ManifestWindow
    transactions: int
    entries: int
    first_transaction: ManifestTransaction | None = Field(description="null when the window holds none.")
    last_transaction: ManifestTransaction | None
    currencies: list[ManifestCurrency]
    stripes: list[ManifestStripe]
    transactions_sha256: str = Field(
        description="SHA-256 (hex) of the concatenated 32-byte hashes of every transaction, in export order."
    )


class SignedExportManifest(BaseModel):
    manifest: ExportManifest
    signature: str = Field(
        description="A JWS (RFC 7515, EdDSA) with a detached unencoded payload (RFC 7797): the manifest object as "
        "canonical JSON (UTF-8, keys sorted, no whitespace; RFC 8785 for this content). Its header's `kid` is `key_id`."
    )


class ManifestJwk(BaseModel):
    """One Ed25519 public key (RFC 8037), named by its RFC 7638 thumbprint."""

    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: str = Field(description="The raw public key, base64url.")
    kid: str = Field(description="The `key_id` of the manifests this key signed.")
    alg: Literal["EdDSA"]
    use: Literal["sig"]


class ManifestJwks(BaseModel):
    """A JWK Set (RFC 7517): the key signing new manifests first, then those of earlier key versions."""

    keys: list[ManifestJwk]
