"""The built-in `paper_voucher` provider: the agency itself issues the voucher, at once, in its answer.

Nothing leaves the service: `issue` draws each voucher's code and signs its token, and the issuance worker
records them as issued in the same transaction (no event follows). The voucher is the entitlement (its id
is the entitlement's id), so cancelling the entitlement is all a cancellation needs, and there is no state
here to ask about.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.providers.base import (
    CancelOutcome,
    DeliveryMechanism,
    IssuedNow,
    IssueInstruction,
    IssueOutcome,
    MalformedEvent,
    PermanentProviderError,
    ProviderEvent,
    StatusOutcome,
)
from cbi_service.kit.settings import Settings
from cbi_service.kit.signing import SigningKeys
from cbi_service.vouchers.codes import new_code
from cbi_service.vouchers.keys import voucher_keys
from cbi_service.vouchers.tokens import sign_voucher

NAME = "paper_voucher"
CHUNK_SIZE = 500


class PaperVoucherProvider:
    def __init__(self, keys: SigningKeys) -> None:
        self._keys = keys

    @classmethod
    def from_settings(cls, settings: Settings) -> PaperVoucherProvider:
        return cls(voucher_keys(settings))

    @property
    def name(self) -> str:
        return NAME

    @property
    def delivery_mechanism(self) -> DeliveryMechanism:
        return "paper_voucher"

    @property
    def chunk_size(self) -> int:
        return CHUNK_SIZE

    async def issue(self, instructions: Sequence[IssueInstruction]) -> list[IssueOutcome]:
        # Whole seconds: the token's `exp` and the entitlement's `expires_at` are the same instant.
        now = datetime.now(UTC).replace(microsecond=0)
        outcomes = []
        for instruction in instructions:
            if instruction.voucher_validity_days is None:
                raise PermanentProviderError("a paper voucher needs its programme's voucher_validity_days")
            expires_at = now + timedelta(days=instruction.voucher_validity_days)
            code = new_code()
            token = sign_voucher(
                self._keys,
                voucher_id=instruction.entitlement_id,
                programme_id=uuid.UUID(instruction.programme_ref),
                amount_minor=instruction.amount_minor,
                currency=instruction.currency,
                expires_at=expires_at,
            )
            outcomes.append(
                IssueOutcome(
                    instruction.entitlement_id,
                    accepted=True,
                    provider_ref=code,
                    issued=IssuedNow(voucher_code=code, voucher_token=token, expires_at=expires_at),
                )
            )
        return outcomes

    async def cancel(self, entitlement_id: uuid.UUID, provider_ref: str | None) -> CancelOutcome:
        return CancelOutcome(entitlement_id, cancelled=True, status="cancelled", provider_ref=provider_ref)

    async def status(self, entitlement_id: uuid.UUID) -> StatusOutcome:
        return StatusOutcome(entitlement_id, status="unknown")

    def parse_event(self, payload: Mapping[str, Any]) -> ProviderEvent:
        raise MalformedEvent("the paper_voucher provider sends no events")

    async def aclose(self) -> None:
        return None
