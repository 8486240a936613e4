"""G2P Connect Disburse messages (v1.0.0): the envelopes both sides build, the models both sides read, and
how the statuses map onto entitlement states.

Shared by the `g2p_connect` adapter and the provider simulator, as `wire` is for the native protocol. The
readers ignore fields they do not use (a provider may send all the optional ones) and bound what they keep.

Statuses (`RequestStatus`) and reason codes (`DisburseStatusReasonCode`) → entitlement:

- `rcvd`, `pdng`: stays `submitted` (no event: the provider holds it and is working on it);
- `succ`: `issued` (`entitlement.issued`);
- `rjct` with `rjct.reference_id.duplicate`: unchanged. The provider already holds this reference from an
  earlier request (one resent after its answer was lost); that one's outcome counts, and the status poll asks
  for it if it never calls back;
- `rjct` with `rjct.timestamp.invalid`, `rjct.schedule_ts.invalid` or `rjct.reference_id.invalid`: `failed`,
  retryable (a resend is stamped anew; a reference the provider does not know never moved money);
- `rjct` with any other code (`rjct.payee_fa.invalid`, `rjct.payer_fa.invalid`, `rjct.amount.invalid`,
  `rjct.currency_code.invalid`, …) or none: `failed`, not retryable.

The entitlement's `provider_ref` is the `transaction_id` of the disburse request under which the provider
took the reference: the adapter's own at submission, the one the provider reports in `on-disburse`.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from adapters.providers import money
from adapters.providers.base import ProviderEvent
from adapters.providers.events import Rfc3339

VERSION = "1.0.0"
RequestStatus = Literal["rcvd", "pdng", "succ", "rjct"]
DUPLICATE_REFERENCE = "rjct.reference_id.duplicate"
RETRYABLE_REJECTIONS = frozenset({"rjct.timestamp.invalid", "rjct.schedule_ts.invalid", "rjct.reference_id.invalid"})
MAX_ITEMS = 1000
MAX_REASON_CHARS = 500
_AMOUNT = re.compile(r"^[0-9]{1,13}\.[0-9]{1,2}$")
"""The published `Amount` pattern (with ASCII digits: `\\d` would take any script's)."""

Text = Annotated[str, Field(min_length=1, max_length=128)]
Reference = Annotated[str, Field(min_length=1, max_length=99)]


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_message_id() -> str:
    return str(uuid.uuid4())


def request_header(
    action: str, *, sender_id: str, receiver_id: str, total_count: int, sender_uri: str | None = None
) -> dict[str, Any]:
    """`MsgHeader_V1.0.0` of a request the service sends."""
    header: dict[str, Any] = {
        "version": VERSION,
        "message_id": new_message_id(),
        "message_ts": now_text(),
        "action": action,
        "sender_id": sender_id,
        "receiver_id": receiver_id,
        "total_count": total_count,
        "is_msg_encrypted": False,
    }
    if sender_uri is not None:
        header["sender_uri"] = sender_uri
    return header


def callback_header(
    action: str, *, status: RequestStatus, sender_id: str, receiver_id: str, total_count: int, completed_count: int
) -> dict[str, Any]:
    """`MsgCallbackHeader_V1.0.0` of a provider's callback (or synchronous answer)."""
    return {
        "version": VERSION,
        "message_id": new_message_id(),
        "message_ts": now_text(),
        "action": action,
        "status": status,
        "total_count": total_count,
        "completed_count": completed_count,
        "sender_id": sender_id,
        "receiver_id": receiver_id,
        "is_msg_encrypted": False,
    }


def ack(
    correlation_id: str, *, status: Literal["ACK", "NACK", "ERR"] = "ACK", error: str | None = None
) -> dict[str, Any]:
    """The published `Response`: what a receiver answers once it has validated a message."""
    message: dict[str, Any] = {"ack_status": status, "timestamp": now_text(), "correlation_id": correlation_id}
    if error is not None:
        message["error"] = {"code": error, "message": error}
    return {"message": message}


def format_amount(minor: int, currency: str) -> str | None:
    """Minor units as the published `Amount` (one or two decimals), or None when it cannot say it exactly
    (a fraction of a cent in a three-decimal currency)."""
    exponent = money.currency_exponent(currency)
    if exponent <= 2:
        whole, fraction = divmod(minor * 10 ** (2 - exponent), 100)
    elif minor % 10 ** (exponent - 2):
        return None
    else:
        whole, fraction = divmod(minor // 10 ** (exponent - 2), 100)
    text = f"{whole}.{fraction:02d}"
    return text if _AMOUNT.match(text) else None


def amount_minor(amount: str, currency: str) -> int | None:
    """A published `Amount` in `currency`'s minor units, or None when it is not one or not whole minor units."""
    if not _AMOUNT.match(amount):
        return None
    try:
        exponent = money.currency_exponent(currency)
        scaled = Decimal(amount).scaleb(exponent)
    except (ValueError, InvalidOperation):
        return None
    return int(scaled) if scaled == scaled.to_integral_value() and scaled > 0 else None


class _Read(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


# What a provider (the simulator) reads.


class RequestHeader(_Read):
    message_id: Text
    message_ts: AwareDatetime
    action: str = Field(max_length=40)
    sender_id: Text
    receiver_id: str | None = Field(default=None, max_length=128)
    total_count: int = Field(ge=0)
    sender_uri: str | None = Field(default=None, max_length=2048)


class DisbursementIn(_Read):
    reference_id: Reference
    payer_fa: str = Field(min_length=1, max_length=256)
    payee_fa: str = Field(min_length=1, max_length=256)
    amount: str = Field(max_length=24)
    currency_code: str | None = Field(default=None, max_length=3)


class DisburseRequest(_Read):
    transaction_id: Reference
    disbursements: list[DisbursementIn] = Field(min_length=1, max_length=MAX_ITEMS)


class _StatusQuery(_Read):
    reference_id: Reference
    txn_type: Literal["disburse"]
    attribute_type: Literal["reference_id_list", "transaction_id"]
    attribute_value: list[Reference] | Reference


class TxnStatusRequest(_Read):
    transaction_id: Reference
    txnstatus_request: _StatusQuery


# What the service reads.


class CallbackHeader(_Read):
    message_id: Text
    message_ts: Rfc3339
    action: str = Field(max_length=40)
    status: RequestStatus
    sender_id: str | None = Field(default=None, max_length=128)
    total_count: int | None = None


class DisbursementStatus(_Read):
    reference_id: Reference
    timestamp: Rfc3339
    status: RequestStatus
    status_reason_code: str | None = Field(default=None, max_length=64)
    status_reason_message: str | None = Field(default=None, max_length=999)


class DisburseResponse(_Read):
    transaction_id: Reference
    disbursements_status: list[DisbursementStatus] = Field(max_length=MAX_ITEMS)


class _TxnStatus(_Read):
    txn_type: Literal["on-disburse"]
    txn_status: DisburseResponse


class TxnStatusResponse(_Read):
    transaction_id: Reference
    correlation_id: str = Field(min_length=1, max_length=99)
    txnstatus_response: _TxnStatus


class _AckError(_Read):
    code: str = Field(max_length=64)
    message: str | None = Field(default=None, max_length=999)


class _AckBody(_Read):
    ack_status: Literal["ACK", "NACK", "ERR"]
    timestamp: str | None = None
    correlation_id: str | None = Field(default=None, max_length=99)
    error: _AckError | None = None


class Ack(_Read):
    message: _AckBody


class _HttpError(_Read):
    code: str = Field(default="", max_length=64)
    message: str = Field(default="", max_length=999)


class HttpErrors(_Read):
    """`HttpErrorResponse`: what 4xx and 5xx answers carry."""

    errors: list[_HttpError] = Field(min_length=1)


def event_of(item: DisbursementStatus, transaction_id: str, entitlement_id: uuid.UUID) -> ProviderEvent | None:
    """One disbursement's status as the event it means for its entitlement (the table above); None for the
    statuses that change nothing."""
    if item.status == "succ":
        return ProviderEvent("entitlement.issued", item.timestamp, entitlement_id, transaction_id)
    if item.status != "rjct" or item.status_reason_code == DUPLICATE_REFERENCE:
        return None
    code = item.status_reason_code or "rjct"
    reason = f"{code}: {item.status_reason_message}" if item.status_reason_message else code
    return ProviderEvent(
        "entitlement.failed",
        item.timestamp,
        entitlement_id,
        transaction_id,
        reason=reason[:MAX_REASON_CHARS],
        retryable=code in RETRYABLE_REJECTIONS,
    )
