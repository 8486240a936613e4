"""The Ed25519 keys ledger export manifests are signed with: a ring of their own, not the vouchers'.

`CBI_LEDGER_SIGNING_KEY` (required in production); in development with none set, one is generated once
into `CBI_DATA_DIR/ledger-signing-key.pem`. After a rotation the old key's public half goes to
`CBI_LEDGER_PREVIOUS_KEYS`, so manifests it signed stay verifiable against the published JWKS.
"""

from __future__ import annotations

from cbi_service.kit.settings import Settings
from cbi_service.kit.signing import KeySource, SigningKeys, signing_keys

DEV_KEY_FILE = "ledger-signing-key.pem"
MANIFEST_KEYS = KeySource("CBI_LEDGER_SIGNING_KEY", "CBI_LEDGER_PREVIOUS_KEYS", DEV_KEY_FILE)


def manifest_keys(settings: Settings) -> SigningKeys:
    return signing_keys(MANIFEST_KEYS, settings.ledger_signing_key, settings.ledger_previous_keys, settings.data_dir)
