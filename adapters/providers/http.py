"""Shared HTTP client for the built-in adapters: pooling, timeouts and error classification.

The classification is the contract with the worker's retry policy: anything that leaves the outcome
unknown (timeout, connection error, 5xx, 429, an unreadable answer) is transient and safe to resend because
every item carries its idempotency key; any other 4xx is permanent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol, Self, TypeVar
from uuid import UUID

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from adapters.providers.base import (
    CancelOutcome,
    DeliveryMechanism,
    IssueInstruction,
    IssueOutcome,
    PermanentProviderError,
    ProviderConfigError,
    StatusOutcome,
    TransientProviderError,
)
from adapters.providers.card_numbers import contains_pan
from adapters.providers.wire import (
    MAX_INSTRUCTIONS_PER_REQUEST,
    CancelRequest,
    CancelResponse,
    ErrorBody,
    InstructionsResponse,
    InstructionView,
)

_M = TypeVar("_M", bound=BaseModel)


class HttpAdapterConfig(BaseModel):
    """The options of a built-in adapter's CBI_PROVIDERS entry.

    Keys used by other parts of the service (e.g. `webhook_secret`, read by the webhook route) are
    ignored here rather than refused.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    base_url: str
    api_key: SecretStr | None = None
    timeout_seconds: float = Field(default=10.0, gt=0)
    connect_timeout_seconds: float = Field(default=5.0, gt=0)
    chunk_size: int = Field(default=500, ge=1, le=MAX_INSTRUCTIONS_PER_REQUEST)
    max_connections: int = Field(default=20, ge=1)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = httpx.URL(value)
        if url.scheme not in {"http", "https"} or not url.host:
            raise ValueError("base_url must be an absolute http(s) URL")
        return value.rstrip("/")


class HttpOptions(Protocol):
    """The connection options every HTTP provider adapter's config has."""

    @property
    def base_url(self) -> str: ...
    @property
    def api_key(self) -> SecretStr | None: ...
    @property
    def timeout_seconds(self) -> float: ...
    @property
    def connect_timeout_seconds(self) -> float: ...
    @property
    def max_connections(self) -> int: ...


def provider_client(
    config: HttpOptions, user_agent: str, headers: Mapping[str, str] | None = None
) -> httpx.AsyncClient:
    """The pooled client an adapter talks to its provider with: its base URL, bearer key, timeouts, pool."""
    sent = {"User-Agent": user_agent, **(headers or {})}
    if config.api_key:
        sent["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
    return httpx.AsyncClient(
        base_url=config.base_url,
        headers=sent,
        timeout=httpx.Timeout(config.timeout_seconds, connect=config.connect_timeout_seconds),
        limits=httpx.Limits(max_connections=config.max_connections, max_keepalive_connections=config.max_connections),
    )


def config_problems(exc: ValidationError) -> str:
    """A config's problems by field name and message only: pydantic's own text would echo values such as
    the api_key."""
    return "; ".join(
        f"{'.'.join(map(str, error['loc']))}: {error['msg']}"
        for error in exc.errors(include_input=False, include_url=False)
    )


class HttpProviderAdapter:
    """A provider reached over the simulator's HTTP API; subclasses fix the product and `parse_event`."""

    product: ClassVar[DeliveryMechanism]

    def __init__(self, name: str, config: HttpAdapterConfig) -> None:
        self._name = name
        self._config = config
        self._client = provider_client(config, f"cbi-service/{self.product}-adapter")

    @classmethod
    def from_config(cls, name: str, config: Mapping[str, Any]) -> Self:
        try:
            return cls(name, HttpAdapterConfig.model_validate(dict(config)))
        except ValidationError as exc:
            raise ProviderConfigError(
                f"provider {name!r}: invalid {cls.product} config: {config_problems(exc)}"
            ) from None

    @property
    def name(self) -> str:
        return self._name

    @property
    def delivery_mechanism(self) -> DeliveryMechanism:
        return self.product

    @property
    def chunk_size(self) -> int:
        return self._config.chunk_size

    async def issue(self, instructions: Sequence[IssueInstruction]) -> list[IssueOutcome]:
        if not instructions:
            return []
        if len(instructions) > self.chunk_size:
            raise ValueError(f"{len(instructions)} instructions exceed chunk_size {self.chunk_size}")
        # Plain JSON rather than the wire models: judging an item is the provider's job (it declines that
        # item alone), and a local validation error here would fail the whole chunk with no outcome.
        body = {
            "instructions": [
                {
                    "idempotency_key": str(item.entitlement_id),
                    "product": self.product,
                    "beneficiary_ref": item.beneficiary_ref,
                    "amount_minor": item.amount_minor,
                    "currency": item.currency,
                    "programme_ref": item.programme_ref,
                    "voucher_validity_days": item.voucher_validity_days if self.product == "voucher" else None,
                }
                for item in instructions
            ]
        }
        response = await self._send("POST", "/instructions", content=json.dumps(body, separators=(",", ":")))
        self._raise_for_status(response)
        results = self._read(InstructionsResponse, response).results
        keys = [str(item.entitlement_id) for item in instructions]
        if [result.idempotency_key for result in results] != keys:
            raise TransientProviderError(
                f"{self.name}: answer does not list the instructions sent", error_code="invalid_response"
            )
        return [
            IssueOutcome(
                entitlement_id=item.entitlement_id,
                accepted=result.accepted,
                provider_ref=result.provider_ref,
                error_code=result.error_code,
                error_message=result.error_message,
                retryable=result.retryable,
            )
            for item, result in zip(instructions, results, strict=True)
        ]

    async def cancel(self, entitlement_id: UUID, provider_ref: str | None) -> CancelOutcome:
        """A 409 is the provider's refusal (already issued, voucher already used), not an error."""
        response = await self._send(
            "POST",
            f"/instructions/{entitlement_id}/cancel",
            content=CancelRequest(provider_ref=provider_ref).model_dump_json(),
        )
        if response.status_code != httpx.codes.CONFLICT:
            self._raise_for_status(response)
        answer = self._read(CancelResponse, response)
        return CancelOutcome(
            entitlement_id=entitlement_id,
            cancelled=answer.cancelled,
            status=answer.status,
            provider_ref=answer.provider_ref,
            error_code=answer.error_code,
            error_message=answer.error_message,
        )

    async def status(self, entitlement_id: UUID) -> StatusOutcome:
        response = await self._send("GET", f"/instructions/{entitlement_id}")
        if response.status_code == httpx.codes.NOT_FOUND:
            return StatusOutcome(entitlement_id=entitlement_id, status="unknown")
        self._raise_for_status(response)
        view = self._read(InstructionView, response)
        card_token, card_last4 = view.card_token, view.card_last4
        if contains_pan(card_token) or contains_pan(card_last4):
            # A full card number is never passed on (CONTRACT §7): the answer still says whether money
            # moved, only without card details, which a later webhook may fill in.
            card_token = card_last4 = None
        return StatusOutcome(
            entitlement_id=entitlement_id,
            status=view.status,
            provider_ref=view.provider_ref,
            amount_minor=view.amount_minor,
            remaining_minor=view.remaining_minor,
            currency=view.currency,
            card_token=card_token,
            card_last4=card_last4,
            voucher_code=view.voucher_code,
            expires_at=view.expires_at,
            reason=view.reason,
            retryable=view.retryable,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _send(self, method: str, path: str, content: str | None = None) -> httpx.Response:
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            return await self._client.request(method, path, content=content, headers=headers)
        except httpx.TimeoutException as exc:
            raise TransientProviderError(f"{self.name}: {method} {path} timed out", error_code="timeout") from exc
        except httpx.TransportError as exc:
            raise TransientProviderError(
                f"{self.name}: {method} {path} failed: {type(exc).__name__}", error_code="connection_error"
            ) from exc

    def _raise_for_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if status < 300:
            return
        code, message = _error_of(response)
        text = f"{self.name}: {response.request.method} {response.request.url.path} → {status}: {message}"
        if status >= 500 or status == httpx.codes.TOO_MANY_REQUESTS:
            raise TransientProviderError(text, status_code=status, error_code=code, retry_after=_retry_after(response))
        # 4xx, and 3xx too: a redirect means a misconfigured base_url, which retrying cannot fix.
        raise PermanentProviderError(text, status_code=status, error_code=code)

    def _read(self, model: type[_M], response: httpx.Response) -> _M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise TransientProviderError(
                f"{self.name}: unreadable answer ({exc.error_count()} errors)",
                status_code=response.status_code,
                error_code="invalid_response",
            ) from exc


def _error_of(response: httpx.Response) -> tuple[str | None, str]:
    try:
        error = ErrorBody.model_validate_json(response.content).error
    except ValidationError:
        return None, response.reason_phrase or "error"
    return error.code, error.message


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.isdigit() else None
