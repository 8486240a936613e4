from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class VoucherJwk(BaseModel):
    """One Ed25519 public key (RFC 8037), named by its RFC 7638 thumbprint."""

    kty: Literal["OKP"]
    crv: Literal["Ed25519"]
    x: str = Field(description="The raw public key, base64url.")
    kid: str = Field(description="The `kid` header of the vouchers this key signed.")
    alg: Literal["EdDSA"]
    use: Literal["sig"]


class VoucherJwks(BaseModel):
    """A JWK Set (RFC 7517): the key signing new vouchers first, then those of earlier key versions."""

    keys: list[VoucherJwk]
