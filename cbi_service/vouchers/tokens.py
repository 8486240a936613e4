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

import base64
import functools
import hmac
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import jwt
from cryptography.exceptions import InvalidSignature

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


_SEGMENTS = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


@dataclass(frozen=True, slots=True)
class PresentedToken:
    """A token as a merchant presented it: read, not yet trusted (`trusted` decides)."""

    text: str
    kid: str
    claims: VoucherClaims


def read_token(token: str) -> PresentedToken:
    """What a token says (InvalidVoucherToken if it cannot be one of ours), before anything is trusted: the
    voucher it names is how a caller finds the token the service issued for it (see `trusted`)."""
    if not _SEGMENTS.match(token):
        raise InvalidVoucherToken("not a compact JWS")
    header_text, claims_text, _ = token.split(".")
    try:
        kid = _kid_of(header_text)
        claims = json.loads(_unb64(claims_text))
        amount, currency, expiry = claims["amt"], claims["cur"], claims["exp"]
        if not isinstance(amount, int) or not isinstance(currency, str) or not isinstance(expiry, int):
            raise InvalidVoucherToken("claims of the wrong type")
        return PresentedToken(
            token,
            kid,
            VoucherClaims(
                voucher_id=uuid.UUID(claims["vid"]),
                programme_id=uuid.UUID(claims["prg"]),
                amount_minor=amount,
                currency=currency,
                expires_at=datetime.fromtimestamp(expiry, UTC),
            ),
        )
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        if isinstance(exc, InvalidVoucherToken):
            raise
        raise InvalidVoucherToken("unreadable header or claims") from None


def trusted(keys: SigningKeys, token: PresentedToken, issued: str | None) -> VoucherClaims:
    """The token's claims if it holds (InvalidVoucherToken otherwise), knowing `issued`: the token the
    service signed and stored for the voucher the token names, or None.

    A token identical, byte for byte, to the one the service signed needs no signature check to be trusted:
    the service made it. Only its key is checked to be still in the ring (a key dropped from the ring revokes
    what it signed, as for any token). Any other token, a tampered one among them, has its signature checked.
    Ed25519 checks were what an offline sync of ten thousand scans spent most of its time on.

    Expiry is the caller's to judge (an offline scan is judged at its scan time). The signature is checked
    directly with `cryptography` (Ed25519 over the token's first two segments, RFC 7515 §5.2) rather than
    through PyJWT, whose per-character checks of each segment cost ten times the signature check; tokens are
    still made by PyJWT (`sign_voucher`).
    """
    key = dict(keys.verifying).get(token.kid)
    if key is None:
        raise InvalidVoucherToken("signed by no key of this service")
    if issued is None or not hmac.compare_digest(token.text.encode(), issued.encode()):
        header_text, claims_text, signature_text = token.text.split(".")
        try:
            key.verify(_unb64(signature_text), f"{header_text}.{claims_text}".encode("ascii"))
        except (InvalidSignature, ValueError):
            raise InvalidVoucherToken("the signature does not verify") from None
    return token.claims


@functools.lru_cache(maxsize=64)
def _kid_of(header_text: str) -> str:
    """The key id of an EdDSA header; the few headers in use (one per key) are read once."""
    header = json.loads(_unb64(header_text))
    if not isinstance(header, dict) or header.get("alg") != ALGORITHM:
        raise InvalidVoucherToken("not an EdDSA token")
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise InvalidVoucherToken("signed by no key of this service")
    return kid


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
