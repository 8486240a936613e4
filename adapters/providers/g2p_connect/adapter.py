"""The `g2p_connect` provider adapter: G2P Connect Disburse v1.0.0, asynchronous.

- `issue` sends one signed `disburse` request per chunk, each disbursement keyed by `reference_id` = the
  entitlement id, paid from `payer_fa` to `payee_fa`; the provider's `ACK` means it took the chunk, and the
  outcomes come later by `on-disburse` callbacks (`read_callback`), verified before anything is stored.
- `request_statuses` sends `disburse/txn/status` for what never called back; the answer is a `txn/on-status`
  callback, read the same way.
- `status` asks `disburse/sync/txn/status` for one entitlement and reads the signed answer at once; `cancel`
  relies on it, since the Disburse API has no cancellation: only what the provider never took, or rejected,
  can be left unpaid.

The payee's financial address is pseudonymous, `token:<beneficiary ref>@<payee_fa_provider>`: no name,
document or account number leaves the service, and the provider holds the store of value for that token (as
a card issuer holds the card). The G2P Connect disbursement is a load to that store of value, so the adapter
delivers `prepaid_card`. The status mapping is in `messages`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from adapters.providers.base import (
    CallbackEvent,
    CallbackKind,
    CancelOutcome,
    DeliveryMechanism,
    InstructionStatus,
    IssueInstruction,
    IssueOutcome,
    MalformedEvent,
    PermanentProviderError,
    ProviderConfigError,
    ProviderEvent,
    SignedCallback,
    StatusOutcome,
    TransientProviderError,
    UnauthenticCallback,
)
from adapters.providers.g2p_connect import messages
from adapters.providers.g2p_connect.messages import (
    Ack,
    CallbackHeader,
    DisbursementStatus,
    DisburseResponse,
    HttpErrors,
    TxnStatusResponse,
)
from adapters.providers.g2p_connect.signature import SignatureError, Signer, Verifier, private_key, public_key
from adapters.providers.http import config_problems, provider_client

_M = TypeVar("_M", bound=BaseModel)
_ADDRESS_PART = re.compile(r"^[A-Za-z0-9.-]{1,128}$")
_TRANSIENT_ERRORS = frozenset({"err.service.unavailable", "err.request.timeout", "err.request.too_many_requests"})
_STATUS_OF: dict[str, InstructionStatus] = {"rcvd": "received", "pdng": "received", "succ": "issued", "rjct": "failed"}


def _secret_text(value: SecretStr | str) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


class G2PConnectConfig(BaseModel):
    """The options of a `g2p_connect` CBI_PROVIDERS entry (see the README); other keys are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    base_url: str
    signing_key: SecretStr
    """The service's Ed25519 key, which signs what it sends (PKCS#8 PEM, or the base64 of its 32-byte seed)."""
    provider_public_key: SecretStr | list[SecretStr] = Field(min_length=1)
    """The provider's Ed25519 public key(s), which verify its callbacks and answers (a list while rotating)."""
    sender_id: str = "cbi-service"
    receiver_id: str | None = None
    """The provider's id in G2P Connect headers; the provider's name when unset."""
    signing_key_id: str = Field(default="1", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    callback_url: str | None = None
    """Where the provider reaches this provider's routes, `https://…/v1/g2p-connect/<name>`, sent as
    `sender_uri`; providers that keep the callback address from onboarding need none."""
    payer_fa: str | None = Field(default=None, max_length=256)
    """The agency's paying account; `programme:<programme id>@<sender_id>` when unset."""
    payee_fa_provider: str | None = None
    api_key: SecretStr | None = None
    timeout_seconds: float = Field(default=10.0, gt=0)
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    chunk_size: int = Field(default=500, ge=1, le=messages.MAX_ITEMS)
    max_connections: int = Field(default=20, ge=1)

    @field_validator("base_url", "callback_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = httpx.URL(value)
        if url.scheme not in {"http", "https"} or not url.host:
            raise ValueError("must be an absolute http(s) URL")
        return value.rstrip("/")

    @field_validator("sender_id", "receiver_id", "payee_fa_provider")
    @classmethod
    def _address_part(cls, value: str | None) -> str | None:
        if value is not None and not _ADDRESS_PART.match(value):
            raise ValueError("must be 1 to 128 letters, digits, dots or dashes")
        return value


class G2PConnectAdapter:
    """A provider reached over G2P Connect Disburse; shared by the tasks of one event loop."""

    def __init__(self, name: str, config: G2PConnectConfig) -> None:
        self._name = name
        self._config = config
        self._receiver_id = config.receiver_id or _address_or(name)
        try:
            self._signer = Signer(
                private_key(config.signing_key.get_secret_value()), config.sender_id, config.signing_key_id
            )
        except ValueError as exc:
            raise ProviderConfigError(f"provider {name!r}: signing_key: {exc}") from None
        keys = config.provider_public_key
        try:
            self._verifier = Verifier(
                tuple(public_key(_secret_text(key)) for key in (keys if isinstance(keys, list) else [keys]))
            )
        except ValueError as exc:
            raise ProviderConfigError(f"provider {name!r}: provider_public_key: {exc}") from None
        self._client = provider_client(config, "cbi-service/g2p-connect-adapter", {"Content-Type": "application/json"})

    @classmethod
    def from_config(cls, name: str, config: Mapping[str, Any]) -> Self:
        try:
            return cls(name, G2PConnectConfig.model_validate(dict(config)))
        except ValidationError as exc:
            raise ProviderConfigError(
                f"provider {name!r}: invalid g2p_connect config: {config_problems(exc)}"
            ) from None

    @property
    def name(self) -> str:
        return self._name

    @property
    def delivery_mechanism(self) -> DeliveryMechanism:
        return "prepaid_card"

    @property
    def chunk_size(self) -> int:
        return self._config.chunk_size

    async def issue(self, instructions: Sequence[IssueInstruction]) -> list[IssueOutcome]:
        """One `disburse` request; an instruction whose amount the protocol cannot carry is declined alone,
        never sent."""
        if len(instructions) > self.chunk_size:
            raise ValueError(f"{len(instructions)} instructions exceed chunk_size {self.chunk_size}")
        transaction_id = str(uuid.uuid4())
        items: list[dict[str, Any]] = []
        accepted = False
        declined: dict[uuid.UUID, IssueOutcome] = {}
        for item in instructions:
            try:
                amount = messages.format_amount(item.amount_minor, item.currency)
            except ValueError:
                declined[item.entitlement_id] = IssueOutcome(
                    item.entitlement_id, accepted=False, error_code="invalid_currency", error_message="unknown currency"
                )
                continue
            if amount is None:
                declined[item.entitlement_id] = IssueOutcome(
                    item.entitlement_id,
                    accepted=False,
                    error_code="amount_not_representable",
                    error_message=f"G2P Connect amounts have two decimals at most, this {item.currency} one three",
                )
                continue
            items.append(self._disbursement(item, amount))
        if items:
            header = self._header("disburse", len(items), "on-disburse")
            message = {"transaction_id": transaction_id, "disbursements": items}
            answer = await self._post("/disburse", self._signer.signed(header, message))
            ack = self._read(Ack, answer)
            if ack.message.ack_status == "ERR":
                self._refuse(answer, ack)
            accepted = ack.message.ack_status == "ACK"
        return [
            declined.get(item.entitlement_id)
            or IssueOutcome(
                item.entitlement_id,
                accepted=accepted,
                provider_ref=transaction_id if accepted else None,
                error_code=None if accepted else "nack",
                error_message=None if accepted else "the provider will not process this request (NACK)",
                retryable=not accepted,
            )
            for item in instructions
        ]

    async def request_statuses(self, entitlement_ids: Sequence[uuid.UUID]) -> None:
        """`disburse/txn/status` by reference list; the provider answers at `txn/on-status`."""
        if not entitlement_ids:
            return
        if len(entitlement_ids) > self.chunk_size:
            raise ValueError(f"{len(entitlement_ids)} references exceed chunk_size {self.chunk_size}")
        # The published schema allows only these two actions on a status request; `on-disburse` names the
        # answer asked for.
        header = self._header("on-disburse", len(entitlement_ids), "txn/on-status")
        answer = await self._post("/disburse/txn/status", self._signer.signed(header, _status_query(entitlement_ids)))
        ack = self._read(Ack, answer)
        if ack.message.ack_status == "ERR":
            self._refuse(answer, ack)

    async def status(self, entitlement_id: uuid.UUID) -> StatusOutcome:
        """`disburse/sync/txn/status` for one reference, its signed answer verified before it is believed."""
        header = self._header("search", 1, None)  # the one action the published sync schema allows
        answer = await self._post(
            "/disburse/sync/txn/status", self._signer.signed(header, _status_query([entitlement_id]))
        )
        try:
            payload = json.loads(answer.content)
            self._verify(payload)
            response = TxnStatusResponse.model_validate(payload.get("message"))
        except (ValueError, UnauthenticCallback, ValidationError) as exc:
            raise TransientProviderError(
                f"{self.name}: unreadable or unauthentic status answer: {type(exc).__name__}",
                status_code=answer.status_code,
                error_code="invalid_response",
            ) from None
        status = response.txnstatus_response.txn_status
        found = [item for item in status.disbursements_status if item.reference_id == str(entitlement_id)]
        if not found:
            return StatusOutcome(entitlement_id=entitlement_id, status="unknown")
        item = found[-1]
        if item.status == "rjct" and item.status_reason_code == messages.DUPLICATE_REFERENCE:
            return StatusOutcome(entitlement_id=entitlement_id, status="received", provider_ref=status.transaction_id)
        event = messages.event_of(item, status.transaction_id, entitlement_id)
        return StatusOutcome(
            entitlement_id=entitlement_id,
            status=_STATUS_OF[item.status],
            provider_ref=status.transaction_id,
            reason=event.reason if event else None,
            retryable=event.retryable if event else None,
        )

    async def cancel(self, entitlement_id: uuid.UUID, provider_ref: str | None) -> CancelOutcome:
        """Disburse has no cancellation: what the provider never took, or rejected, stays unpaid (cancelled);
        anything it holds goes on."""
        outcome = await self.status(entitlement_id)
        if outcome.status in ("unknown", "failed"):
            return CancelOutcome(
                entitlement_id, cancelled=True, status=outcome.status, provider_ref=outcome.provider_ref
            )
        return CancelOutcome(
            entitlement_id,
            cancelled=False,
            status=outcome.status,
            provider_ref=outcome.provider_ref,
            error_code="not_cancellable",
            error_message=f"G2P Connect Disburse cannot cancel a disbursement the provider holds ({outcome.status})",
        )

    def parse_event(self, payload: Mapping[str, Any]) -> ProviderEvent:
        raise MalformedEvent(
            "a G2P Connect provider calls back at /v1/g2p-connect/{provider}/on-disburse",
            [{"field": "", "message": "not a Standard Webhooks provider"}],
        )

    def read_callback(self, payload: object, kind: CallbackKind) -> SignedCallback:
        """An `on-disburse` or `txn/on-status` callback (its JSON body decoded): the signature first, then the
        message."""
        if not isinstance(payload, dict):
            raise MalformedEvent("the body is not a JSON object", [{"field": "", "message": "not a JSON object"}])
        created = self._verify(payload)
        header = _validated(CallbackHeader, payload.get("header"), "header")
        if header.action != "on-disburse":
            raise MalformedEvent("wrong action", [{"field": "header.action", "message": "must be on-disburse"}])
        if kind == "on-disburse":
            response = _validated(DisburseResponse, payload.get("message"), "message")
        else:
            response = _validated(TxnStatusResponse, payload.get("message"), "message").txnstatus_response.txn_status
        events: dict[str, CallbackEvent] = {}
        for index, item in enumerate(response.disbursements_status):
            try:
                entitlement_id = uuid.UUID(item.reference_id)
            except ValueError:
                raise MalformedEvent(
                    "unknown reference",
                    [
                        {
                            "field": f"message.disbursements_status[{index}].reference_id",
                            "message": "not a reference this service sent",
                        }
                    ],
                ) from None
            event = messages.event_of(item, response.transaction_id, entitlement_id)
            if event is not None and item.reference_id not in events:
                events[item.reference_id] = CallbackEvent(item.reference_id, event, _record(header, response, item))
        return SignedCallback(
            message_id=header.message_id,
            signed_at=datetime.fromtimestamp(created, tz=UTC),
            events=tuple(events.values()),
            acknowledgement=messages.ack(header.message_id),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    def _header(self, action: str, total: int, callback: str | None) -> dict[str, Any]:
        base = self._config.callback_url
        return messages.request_header(
            action,
            sender_id=self._config.sender_id,
            receiver_id=self._receiver_id,
            total_count=total,
            sender_uri=f"{base}/{callback}" if base and callback else None,
        )

    def _disbursement(self, item: IssueInstruction, amount: str) -> dict[str, Any]:
        provider = self._config.payee_fa_provider or self._receiver_id
        return {
            "reference_id": str(item.entitlement_id),
            "payer_fa": self._config.payer_fa or f"programme:{item.programme_ref}@{self._config.sender_id}",
            "payee_fa": f"token:{item.beneficiary_ref}@{provider}",
            "amount": amount,
            "currency_code": item.currency,
        }

    def _verify(self, payload: Mapping[str, Any]) -> int:
        header = payload.get("header")
        if not isinstance(header, dict):
            raise UnauthenticCallback("the message has no header to verify")
        try:
            return self._verifier.verify(payload.get("signature"), header, payload.get("message"))
        except SignatureError as exc:
            raise UnauthenticCallback(str(exc)) from None

    async def _post(self, path: str, body: Mapping[str, Any]) -> httpx.Response:
        try:
            response = await self._client.post(path, content=json.dumps(body, separators=(",", ":")))
        except httpx.TimeoutException as exc:
            raise TransientProviderError(f"{self.name}: POST {path} timed out", error_code="timeout") from exc
        except httpx.TransportError as exc:
            raise TransientProviderError(
                f"{self.name}: POST {path} failed: {type(exc).__name__}", error_code="connection_error"
            ) from exc
        status = response.status_code
        if status < 300:
            return response
        code, text = _error_of(response)
        message = f"{self.name}: POST {path} → {status}: {text}"
        if status >= 500 or status == httpx.codes.TOO_MANY_REQUESTS:
            raise TransientProviderError(
                message, status_code=status, error_code=code, retry_after=_retry_after(response)
            )
        raise PermanentProviderError(message, status_code=status, error_code=code)

    def _read(self, model: type[_M], response: httpx.Response) -> _M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise TransientProviderError(
                f"{self.name}: unreadable answer ({exc.error_count()} errors)",
                status_code=response.status_code,
                error_code="invalid_response",
            ) from exc

    def _refuse(self, response: httpx.Response, ack: Ack) -> None:
        code = ack.message.error.code if ack.message.error else "err"
        message = f"{self.name}: the provider answered ERR: {code}"
        if code in _TRANSIENT_ERRORS:
            raise TransientProviderError(message, status_code=response.status_code, error_code=code)
        raise PermanentProviderError(message, status_code=response.status_code, error_code=code)


def _validated(model: type[_M], value: object, prefix: str) -> _M:
    """`value` read as `model`, or a `MalformedEvent` naming each wrong field (never echoing its value)."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        errors = [
            {
                "field": prefix
                + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]),
                "message": error["msg"].removeprefix("Value error, "),
            }
            for error in exc.errors(include_url=False, include_input=False)
        ]
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise MalformedEvent(f"malformed G2P Connect message: {summary}", errors) from None


def _status_query(entitlement_ids: Sequence[uuid.UUID]) -> dict[str, Any]:
    return {
        "transaction_id": str(uuid.uuid4()),
        "txnstatus_request": {
            "reference_id": str(uuid.uuid4()),
            "txn_type": "disburse",
            "attribute_type": "reference_id_list",
            "attribute_value": [str(entitlement_id) for entitlement_id in entitlement_ids],
        },
    }


def _record(header: CallbackHeader, response: DisburseResponse, item: DisbursementStatus) -> str:
    """What the inbox keeps of one outcome: its message and transaction, and its own status, no address."""
    return json.dumps(
        {
            "message_id": header.message_id,
            "message_ts": header.message_ts.isoformat(),
            "transaction_id": response.transaction_id,
            "disbursement_status": item.model_dump(mode="json", exclude_none=True),
        },
        separators=(",", ":"),
    )


def _address_or(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9.-]", "-", name)[:128]
    return cleaned or "provider"


def _error_of(response: httpx.Response) -> tuple[str | None, str]:
    try:
        error = HttpErrors.model_validate_json(response.content).errors[0]
    except ValidationError:
        return None, response.reason_phrase or "error"
    return error.code or None, error.message or error.code or "error"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None
