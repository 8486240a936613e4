"""The voucher's QR token: a compact JWS (RFC 7515) signed with Ed25519, checkable offline with the JWKS.

Header: `alg` EdDSA, `kid` (the key's thumbprint, see `keys`), `typ` JWT. Claims, kept short for a small
QR code and free of personal data:

    vid  the voucher's id (its entitlement's id)
    prg  the programme's id
    amt  the voucher's value in minor units of `cur` (an integer)
    cur  ISO 4217 currency code
    exp  expiry, seconds since the epoch (RFC 7519): not valid at or after it
"""

from __future__ import annotations

import uuid
from datetime import datetime

import jwt

from cbi_service.kit.signing import ALGORITHM, SigningKeys


def sign_voucher(
    keys: SigningKeys,
    *,
    voucher_id: uuid.UUID,
    programme_id: uuid.UUID,
    amount_minor: int,
    currency: str,
    expires_at: datetime,
) -> str:
    claims = {
        "vid": str(voucher_id),
        "prg": str(programme_id),
        "amt": amount_minor,
        "cur": currency,
        "exp": int(expires_at.timestamp()),
    }
    return jwt.encode(claims, keys.signing, algorithm=ALGORITHM, headers={"kid": keys.kid})
