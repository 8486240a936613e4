"""The public keys of paper vouchers, for merchants' apps to check vouchers offline, and a batch's vouchers
printed on sheets to cut."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from cbi_service.auth.dependencies import require_roles
from cbi_service.auth.roles import Principal, Role
from cbi_service.kit.db import SessionDep
from cbi_service.kit.routing import StorableTextRoute
from cbi_service.vouchers import service
from cbi_service.vouchers.keys import voucher_keys
from cbi_service.vouchers.schemas import VoucherJwks

router = APIRouter(tags=["vouchers"], route_class=StorableTextRoute)
Officer = Annotated[Principal, Depends(require_roles(Role.programme_officer))]

KEYS_MAX_AGE_SECONDS = 300
"""How long a client may cache the keys: short enough that a rotation's new key reaches merchants quickly."""
PDF = "application/pdf"
_BINARY = {"schema": {"type": "string", "format": "binary"}}


@router.get("/v1/vouchers/keys", response_model=VoucherJwks)
async def voucher_public_keys(request: Request, response: Response) -> VoucherJwks:
    """The JWKS a voucher's QR token (a compact JWS, EdDSA over Ed25519) verifies against: pick the key
    by the token's `kid`. No authentication: merchants' apps fetch it to check vouchers offline."""
    response.headers["Cache-Control"] = f"public, max-age={KEYS_MAX_AGE_SECONDS}"
    return VoucherJwks.model_validate(voucher_keys(request.app.state.settings).jwks())


PRINT_DESCRIPTION = """
Every `issued` voucher of a paper-voucher batch on A4 sheets of eight A7 vouchers (two columns, four rows,
dashed lines to cut along), in entitlement id order. Each voucher shows its QR code (the entitlement's
`voucher_token`), its `voucher_code`, the amount with the currency's decimals, the expiry (UTC), the
programme's name and the holder's given names with the initial of the family name: no family name,
document or date of birth. Redeemed, expired and cancelled vouchers are left out.

409 when the batch's programme does not deliver `paper_voucher`, or when none of its vouchers is issued
yet (before release). Every printing is recorded in the audit trail (`batch.vouchers_printed`, with the
number of vouchers printed). The sheets carry personal data: the response is never cached.
"""


@router.get(
    "/v1/payment-batches/{batch_id}/vouchers.pdf",
    response_class=Response,
    description=PRINT_DESCRIPTION,
    responses={200: {"description": "The sheets.", "content": {PDF: _BINARY}}},
)
async def print_vouchers(batch_id: uuid.UUID, session: SessionDep, principal: Officer) -> Response:
    printed = await service.print_vouchers(session, principal, batch_id)
    return Response(
        printed.pdf,
        media_type=PDF,
        headers={
            "Content-Disposition": f'attachment; filename="vouchers-{batch_id}.pdf"',
            "Cache-Control": "no-store",
        },
    )
