"""The public keys of paper vouchers, for merchants' apps to check vouchers offline."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from cbi_service.kit.routing import StorableTextRoute
from cbi_service.vouchers.keys import voucher_keys
from cbi_service.vouchers.schemas import VoucherJwks

router = APIRouter(prefix="/v1/vouchers", tags=["vouchers"], route_class=StorableTextRoute)

KEYS_MAX_AGE_SECONDS = 300
"""How long a client may cache the keys: short enough that a rotation's new key reaches merchants quickly."""


@router.get("/keys", response_model=VoucherJwks)
async def voucher_public_keys(request: Request, response: Response) -> VoucherJwks:
    """The JWKS a voucher's QR token (a compact JWS, EdDSA over Ed25519) verifies against: pick the key
    by the token's `kid`. No authentication: merchants' apps fetch it to check vouchers offline."""
    response.headers["Cache-Control"] = f"public, max-age={KEYS_MAX_AGE_SECONDS}"
    return VoucherJwks.model_validate(voucher_keys(request.app.state.settings).jwks())
