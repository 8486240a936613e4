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
from dataclasses import dataclass
from datetime import UTC, datetime

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


@dataclass(frozen=True)
class VoucherClaims:
    """What a voucher's token says, once its signature holds."""

    voucher_id: uuid.UUID
    programme_id: uuid.UUID
    amount_minor: int
    currency: str
    expires_at: datetime


class InvalidVoucherToken(ValueError):
    """A token that is not one of ours: malformed, signed by no key of the ring, or altered after signing."""


def verify_voucher(keys: SigningKeys, token: str) -> VoucherClaims:
    """The claims of a token signed by a key of the ring (the one its `kid` names), whatever its expiry: when a
    voucher was still valid is the caller's to judge (an offline scan is judged at its scan time)."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        key = dict(keys.verifying).get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidVoucherToken("signed by no key of this service")
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            options={"verify_exp": False, "require": ["vid", "prg", "amt", "cur", "exp"]},
        )
        amount, currency, expiry = claims["amt"], claims["cur"], claims["exp"]
        if not isinstance(amount, int) or not isinstance(currency, str) or not isinstance(expiry, int):
            raise InvalidVoucherToken("claims of the wrong type")
        return VoucherClaims(
            voucher_id=uuid.UUID(claims["vid"]),
            programme_id=uuid.UUID(claims["prg"]),
            amount_minor=amount,
            currency=currency,
            expires_at=datetime.fromtimestamp(expiry, UTC),
        )
    except jwt.PyJWTError as exc:
        raise InvalidVoucherToken(str(exc)) from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise InvalidVoucherToken(f"unreadable claims: {exc}") from None
