"""Simulator settings: where webhooks go, how they are signed, and which faults to inject."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from standardwebhooks import Webhook
from standardwebhooks.webhooks import EmptyWebhookSecretError


class Faults(BaseModel):
    """Fault injection; replaceable while running through `PATCH /admin/faults`.

    `failure_rate` answers 5xx *before* acting; `timeout_rate` acts and then withholds the answer for
    `hang_seconds`, the case that only idempotency keys make safe: the client cannot tell whether the
    provider acted.
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


class SimulatorOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    webhook_url: str
    webhook_secret: str
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
    def _standard_webhooks_secret(cls, value: str) -> str:
        """Refuse at startup what the signer would refuse at the first event."""
        try:
            Webhook(value)
        except (ValueError, EmptyWebhookSecretError) as exc:
            raise ValueError("webhook secret must be 'whsec_' followed by non-empty base64") from exc
        return value
