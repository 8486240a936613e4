"""The Ed25519 keys paper vouchers are signed with, and the JWKS merchants' phones verify them against.

The signing key comes from `CBI_VOUCHER_SIGNING_KEY` (required in production); in development with none
set, one is generated once into `CBI_DATA_DIR/voucher-signing-key.pem`. A rotation sets the new key and
moves the old one's public half to `CBI_VOUCHER_PREVIOUS_KEYS`: the JWKS keeps listing it, so vouchers
printed before stay verifiable. The key handling is `kit.signing`'s.
"""

from __future__ import annotations

from cbi_service.kit.settings import Settings
from cbi_service.kit.signing import KeySource, SigningKeys, signing_keys

DEV_KEY_FILE = "voucher-signing-key.pem"
VOUCHER_KEYS = KeySource("CBI_VOUCHER_SIGNING_KEY", "CBI_VOUCHER_PREVIOUS_KEYS", DEV_KEY_FILE)


def voucher_keys(settings: Settings) -> SigningKeys:
    return signing_keys(VOUCHER_KEYS, settings.voucher_signing_key, settings.voucher_previous_keys, settings.data_dir)
