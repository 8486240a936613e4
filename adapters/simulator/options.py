"""Simulator settings: the protocol it speaks, where its callbacks go, how they are signed, which faults."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError

from adapters.providers.g2p_connect.signature import private_key, public_key


class Faults(BaseModel):
    """Fault injection; replaceable while running through `PATCH /admin/faults`.

    `failure_rate` answers 5xx *before* acting; `timeout_rate` acts and then withholds the answer for
    `hang_seconds`, the case that only idempotency keys make safe: the client cannot tell whether the
    provider acted. `drop_rate` loses callbacks for good (never sent, counted as dropped): what only a
    status poll recovers.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    failure_rate: float = Field(default=0.0, ge=0, le=1)
    latency_ms: int = Field(default=0, ge=0, le=600_000)
    timeout_rate: float = Field(default=0.0, ge=0, le=1)
    hang_seconds: float = Field(default=30.0, gt=0, le=3600)
    duplicate_rate: float = Field(default=0.0, ge=0, le=1)
    reorder: bool = False
    reorder_window_ms: int = Field(default=500, ge=1, le=600_000)
    decline_rate: float = Field(default=0.0, ge=0, le=1)
    drop_rate: float = Field(default=0.0, ge=0, le=1)


Protocol = Literal["native", "g2p-connect"]


class SimulatorOptions(BaseModel):
    """`native`: the service's own provider API, Standard Webhooks to `webhook_url`. `g2p-connect`: G2P
    Connect Disburse, callbacks to `webhook_url` + `/on-disburse` and `/txn/on-status`, signed with
    `g2p_signing_key`, requests verified with `g2p_client_public_key`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    webhook_url: str
    webhook_secret: str | None = None
    protocol: Protocol = "native"
    g2p_signing_key: str | None = None
    g2p_client_public_key: str | None = None
    g2p_id: str = Field(default="sim-g2p", pattern=r"^[A-Za-z0-9.-]{1,128}$")
    callback_max_items: int = Field(default=100, ge=1, le=1000)
    faults: Faults = Faults()
    api_key: str | None = None
    delivery_concurrency: int = Field(default=64, ge=1, le=1024)
    delivery_max_attempts: int = Field(default=12, ge=1)
    delivery_timeout_seconds: float = Field(default=10.0, gt=0)
    seed: int | None = None

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("webhook URL must be an absolute http(s) URL")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _standard_webhooks_secret(cls, value: str | None) -> str | None:
        """Refuse at startup what the signer would refuse at the first event."""
        if value is None:
            return None
        try:
            Webhook(value)
        except (ValueError, EmptyWebhookSecretError) as exc:
            raise ValueError("webhook secret must be 'whsec_' followed by non-empty base64") from exc
        return value

    @field_validator("g2p_signing_key")
    @classmethod
    def _signing_key(cls, value: str | None) -> str | None:
        if value is not None:
            private_key(value)
        return value

    @field_validator("g2p_client_public_key")
    @classmethod
    def _client_key(cls, value: str | None) -> str | None:
        if value is not None:
            public_key(value)
        return value

    @model_validator(mode="after")
    def _keys_of_the_protocol(self) -> SimulatorOptions:
        if self.protocol == "native" and self.webhook_secret is None:
            raise ValueError("the native protocol signs webhooks: give a webhook secret")
        if self.protocol == "g2p-connect" and (self.g2p_signing_key is None or self.g2p_client_public_key is None):
            raise ValueError("G2P Connect needs the simulator's signing key and the client's public key")
        return self
