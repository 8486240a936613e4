from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from adapters.providers.base import EventType
from cbi_service.webhooks.models import EVENT_STATUSES, WebhookEvent

EventStatus = StrEnum("EventStatus", {s: s for s in EVENT_STATUSES})  # type: ignore[misc]


class WebhookAck(BaseModel):
    """What a provider gets back once its event is durably stored (or was already)."""

    id: uuid.UUID = Field(description="The stored event's id in the inbox.")
    status: EventStatus = Field(description="The event's processing status; `received` until it is applied.")
    duplicate: bool = Field(description="True when this webhook-id was already stored: nothing was done again.")


class StoredEventOut(BaseModel):
    """An authentic event as the inbox holds it, for review; no card or voucher data."""

    id: uuid.UUID
    provider: str
    webhook_id: str
    type: str
    entitlement_id: uuid.UUID
    provider_ref: str
    status: EventStatus
    detail: str | None = Field(description="Why it was refused or ignored, or the kind of error that failed it.")
    occurred_at: datetime = Field(description="When the provider says it happened.")
    received_at: datetime
    attempts: int = Field(description="How many times it was run against the entitlements.")

    @classmethod
    def of(cls, event: WebhookEvent) -> StoredEventOut:
        return cls(
            id=event.id,
            provider=event.provider,
            webhook_id=event.webhook_id,
            type=event.event_type,
            entitlement_id=event.entitlement_id,
            provider_ref=event.provider_ref,
            status=EventStatus(event.status),
            detail=event.detail,
            occurred_at=event.occurred_at,
            received_at=event.received_at,
            attempts=event.attempts,
        )


class EventEnvelope(BaseModel):
    """The body a provider signs (CONTRACT §8); documented here, validated by the provider's adapter."""

    type: Literal["entitlement.issued", "entitlement.failed", "voucher.redeemed", "voucher.expired"]
    timestamp: datetime
    data: dict[str, Any] = Field(
        description="`entitlement_id` and `provider_ref`, plus per type: `card_token` and `card_last4` or "
        "`voucher_code` (issued); `reason`, `retryable` (failed); `amount` {amount, currency} and `merchant` "
        "(redeemed)."
    )


class _ReviewIds(BaseModel):
    model_config = ConfigDict(extra="ignore")

    entitlement_id: uuid.UUID
    provider_ref: str = Field(min_length=1, max_length=128)


class ReviewEnvelope(BaseModel):
    """The least of an event the inbox needs to keep it for review: what happened, when, to which entitlement."""

    model_config = ConfigDict(extra="ignore")

    type: EventType
    timestamp: AwareDatetime
    data: _ReviewIds


class G2PCallbackEnvelope(BaseModel):
    """A G2P Connect callback (`on-disburse`, `txn/on-status`), as the published Disburse API defines it;
    documented here, verified and read by the provider's `g2p_connect` adapter."""

    signature: str = Field(
        description='`Signature: namespace="g2p", kidId="{sender_id}|{key_id}|ed25519", algorithm="ed25519", '
        'created="…", expires="…", headers="(created) (expires) digest", signature="<base64>"`: Ed25519 over '
        "the BLAKE2b-512 digest of the canonical JSON of `header` and `message`."
    )
    header: dict[str, Any] = Field(
        description="`MsgCallbackHeader_V1.0.0`: `message_id` (unique per message; redeliveries reuse it), "
        "`message_ts`, `action` (`on-disburse`), `status`, and optionally `sender_id`, `receiver_id`, counts."
    )
    message: dict[str, Any] = Field(
        description="`DisburseResponse` (`transaction_id`, `disbursements_status[]` with `reference_id` = the "
        "entitlement id, `timestamp`, `status` rcvd | pdng | succ | rjct, `status_reason_code`), or for "
        "`txn/on-status` a `TxnStatusResponse` holding one in `txnstatus_response.txn_status`."
    )


class G2PAckBody(BaseModel):
    ack_status: Literal["ACK"] = Field(description="The message and its signature were valid; all of it is stored.")
    timestamp: datetime
    correlation_id: str = Field(description="The callback's `message_id`.")


class G2PAck(BaseModel):
    """The published `Response`: the acknowledgement of a stored callback (also of a redelivered one)."""

    message: G2PAckBody
