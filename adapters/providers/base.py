"""The provider adapter interface the disbursement worker and the webhook inbox rely on.

Everything a provider integration exchanges with the service is expressed here in provider-neutral terms:
money in integer minor units, the entitlement id as the idempotency key, and a canonical event type, so a
new provider (built in or installed as a third-party package) only has to translate its own wire format.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable
from uuid import UUID

DeliveryMechanism = Literal["prepaid_card", "voucher", "paper_voucher"]
EventType = Literal["entitlement.issued", "entitlement.failed", "voucher.redeemed", "voucher.expired"]
InstructionStatus = Literal["unknown", "received", "issued", "failed", "cancelled", "redeemed", "expired"]
"""What the provider says about one instruction; `unknown` means it never saw (or kept) the key."""


@dataclass(frozen=True, slots=True)
class IssueInstruction:
    """One entitlement to issue; `entitlement_id` doubles as the provider's idempotency key.

    `beneficiary_ref` is a pseudonymous reference: no name, document or phone ever leaves the service.
    """

    entitlement_id: UUID
    beneficiary_ref: str
    amount_minor: int
    currency: str
    programme_ref: str
    voucher_validity_days: int | None = None


@dataclass(frozen=True, slots=True)
class IssuedNow:
    """What a provider that issues in its synchronous answer hands over: the voucher itself."""

    voucher_code: str
    voucher_token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class IssueOutcome:
    """The provider's synchronous answer for one instruction: accepted for processing, or declined.

    Acceptance is usually not issuance: the result arrives later as an `entitlement.issued` or
    `entitlement.failed` event. A provider that issues at once (the agency's own paper vouchers) sets
    `issued`, and no event follows.
    """

    entitlement_id: UUID
    accepted: bool
    provider_ref: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    retryable: bool = False
    issued: IssuedNow | None = None


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    """Whether the provider guarantees no money will move for this entitlement.

    `cancelled` is also true when the provider never saw the key: it then records the cancellation so a
    late-arriving instruction with that key is refused rather than issued.
    """

    entitlement_id: UUID
    cancelled: bool
    status: InstructionStatus
    provider_ref: str | None = None
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class StatusOutcome:
    """The provider's view of one instruction, used to resume after a crash without re-sending."""

    entitlement_id: UUID
    status: InstructionStatus
    provider_ref: str | None = None
    amount_minor: int | None = None
    remaining_minor: int | None = None
    currency: str | None = None
    card_token: str | None = None
    card_last4: str | None = None
    voucher_code: str | None = None
    expires_at: datetime | None = None
    reason: str | None = None
    retryable: bool | None = None

    @property
    def found(self) -> bool:
        return self.status != "unknown"


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """A provider webhook mapped to provider-neutral terms; it never holds a full card number."""

    type: EventType
    timestamp: datetime
    entitlement_id: UUID
    provider_ref: str
    card_token: str | None = None
    card_last4: str | None = None
    voucher_code: str | None = None
    reason: str | None = None
    retryable: bool | None = None
    amount_minor: int | None = None
    currency: str | None = None
    merchant: str | None = None


class ProviderError(Exception):
    """A provider call that did not produce an answer about the instructions it carried."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code
        self.retry_after = retry_after


class TransientProviderError(ProviderError):
    """Timeouts, connection failures, 5xx and 429: the outcome is unknown, so resend with the same keys."""


class PermanentProviderError(ProviderError):
    """A 4xx refusal of the whole request: resending the same request cannot succeed."""


class MalformedEvent(ValueError):
    """A webhook body that does not match the provider's event schema (→ 400/422 at the API edge)."""

    def __init__(self, message: str, errors: Sequence[Mapping[str, str]] = ()) -> None:
        super().__init__(message)
        self.errors: list[dict[str, str]] = [dict(error) for error in errors]


class ProviderConfigError(ValueError):
    """A CBI_PROVIDERS entry that cannot produce an adapter; raised at startup, never per request."""


class UnauthenticCallback(Exception):
    """A callback whose signature is missing, wrong or stale (→ 401 at the API edge, nothing stored)."""


CallbackKind = Literal["on-disburse", "on-status"]
"""The answer to a disbursement request, or to a status request (G2P Connect `txn/on-status`)."""


@dataclass(frozen=True, slots=True)
class CallbackEvent:
    """One event read from a signed callback message that may carry many.

    `key` tells it apart from the others of its message (the inbox stores it under the message id and this
    key, so a redelivered message has no second effect); `record` is the part of the message it was read
    from, as compact JSON without personal data, which the inbox keeps beside its reading.
    """

    key: str
    event: ProviderEvent
    record: str


@dataclass(frozen=True, slots=True)
class SignedCallback:
    """An authentic callback message: its id, when it was signed, and the events it carries."""

    message_id: str
    signed_at: datetime
    events: tuple[CallbackEvent, ...]
    acknowledgement: Mapping[str, Any]
    """The body to answer the provider with once every event is stored."""


@runtime_checkable
class ProviderAdapter(Protocol):
    """What the service needs from a provider integration.

    Implementations must be safe to share across tasks of one event loop, keep their own connection pool,
    and raise `TransientProviderError` / `PermanentProviderError` (never transport-specific exceptions) so
    the caller's retry policy does not depend on the transport.
    """

    @property
    def name(self) -> str:
        """The provider name from CBI_PROVIDERS (not the adapter kind)."""
        ...

    @property
    def delivery_mechanism(self) -> DeliveryMechanism: ...

    @property
    def chunk_size(self) -> int:
        """The most instructions one `issue` call may carry."""
        ...

    async def issue(self, instructions: Sequence[IssueInstruction]) -> list[IssueOutcome]:
        """Send one chunk; outcomes come back in the order of `instructions`."""
        ...

    async def cancel(self, entitlement_id: UUID, provider_ref: str | None) -> CancelOutcome: ...

    async def status(self, entitlement_id: UUID) -> StatusOutcome: ...

    def parse_event(self, payload: Mapping[str, Any]) -> ProviderEvent:
        """Validate an already signature-checked webhook body; raises `MalformedEvent`."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class CallbackProvider(Protocol):
    """A provider that answers by signed callback messages carrying many outcomes (G2P Connect), and whose
    status is asked for in bulk, the answer coming back as such a callback."""

    @property
    def name(self) -> str: ...

    @property
    def chunk_size(self) -> int: ...

    def read_callback(self, payload: object, kind: CallbackKind) -> SignedCallback:
        """Verify the signature of the decoded JSON body, then read the message; raises `UnauthenticCallback`
        or `MalformedEvent`."""
        ...

    async def request_statuses(self, entitlement_ids: Sequence[UUID]) -> None:
        """Ask for the status of up to `chunk_size` entitlements; raises the usual provider errors."""
        ...
