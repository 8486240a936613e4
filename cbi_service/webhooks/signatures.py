"""Standard Webhooks verification with each provider's secrets (several at once while one is rotated).

Secrets are decoded strictly when the service starts, so a mistyped secret stops startup instead of
turning every webhook into a 401 (or, inside the library, a `binascii.Error`) at request time. The
library checks the ±5 minute timestamp window and compares signatures in constant time; everything it
can raise for a hostile header (its own error, `ValueError` for a signature without a comma,
`binascii.Error` for bad base64) is one `InvalidSignature` here.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import SecretStr
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from adapters.providers.base import ProviderConfigError

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format prefix of secrets, not a secret
MIN_PRODUCTION_SECRET_BYTES = 24
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
MAX_SIGNATURES = 8
#: Secrets printed in the Standard Webhooks documentation and its libraries' examples: anyone can sign with
#: them, so production refuses them (however written) as it refuses short ones.
PUBLISHED_SECRETS = ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",)


class InvalidSignature(Exception):
    """The request cannot be shown to come from the provider (→ 401, nothing stored)."""


@dataclass(frozen=True, slots=True)
class SignedMessage:
    webhook_id: str
    signed_at: datetime
    body: str


def decode_secret(provider: str, secret: object) -> bytes:
    """`whsec_<base64>` (or bare base64), as settings hold it (SecretStr) or plain → key bytes; anything else
    is a configuration error."""
    if isinstance(secret, SecretStr):
        secret = secret.get_secret_value()
    if not isinstance(secret, str) or not secret.strip():
        raise ProviderConfigError(f"provider {provider!r}: webhook_secret entries must be non-empty strings")
    encoded = secret.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProviderConfigError(f"provider {provider!r}: webhook_secret is not valid base64") from exc
    if not key:
        raise ProviderConfigError(f"provider {provider!r}: webhook_secret is empty")
    return key


class ProviderVerifier:
    """Accepts a message signed with any of the provider's current secrets."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        self._hooks = tuple(Webhook(key) for key in keys)

    @classmethod
    def from_config(cls, provider: str, config: Mapping[str, Any], *, production: bool) -> ProviderVerifier:
        configured = config.get("webhook_secret")
        secrets: list[object] = [] if configured is None else [configured]
        if isinstance(configured, list):
            if not configured:
                raise ProviderConfigError(f"provider {provider!r}: webhook_secret list is empty")
            secrets = list(configured)
        keys = [decode_secret(provider, secret) for secret in secrets]
        if production and set(keys) & {decode_secret("example", secret) for secret in PUBLISHED_SECRETS}:
            raise ProviderConfigError(f"provider {provider!r}: webhook_secret is a published example, not a secret")
        if production and any(len(key) < MIN_PRODUCTION_SECRET_BYTES for key in keys):
            raise ProviderConfigError(
                f"provider {provider!r}: webhook secrets need at least {MIN_PRODUCTION_SECRET_BYTES} bytes"
            )
        return cls(keys)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> SignedMessage:
        """Check the signature over the raw body; a provider without a secret can never be verified.

        The header may carry several signatures (a provider rotating its secret signs with both); each is
        tried on its own, so one malformed entry cannot hide a valid one.
        """
        values = {name: headers.get(name, "") for name in HEADERS}
        if not all(values.values()):
            raise InvalidSignature("missing webhook-id, webhook-timestamp or webhook-signature header")
        if not self._hooks:
            raise InvalidSignature("no webhook secret is configured for this provider")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidSignature("the body is not UTF-8 text") from exc
        signatures = values["webhook-signature"].split()[:MAX_SIGNATURES]
        for hook in self._hooks:
            for signature in signatures:
                try:
                    hook.verify(text, {**values, "webhook-signature": signature}, json_parse=False)
                except (WebhookVerificationError, ValueError):
                    continue
                signed_at = datetime.fromtimestamp(float(values["webhook-timestamp"]), tz=UTC)
                return SignedMessage(values["webhook-id"], signed_at, text)
        raise InvalidSignature("no valid signature, or a timestamp outside the tolerance")


def build_verifiers(providers: Mapping[str, Mapping[str, Any]], *, production: bool) -> dict[str, ProviderVerifier]:
    """Every configured provider's verifier, built at startup so a bad secret is a startup error."""
    return {
        name: ProviderVerifier.from_config(name, config, production=production) for name, config in providers.items()
    }
