"""The simulated provider's books: instructions by idempotency key, cards, vouchers and counters.

Every method is synchronous and the server runs on one event loop, so no other request can interleave
between a method's check and its change: two concurrent calls carrying the same key yield one record and at
most one card load or voucher, which is exactly the property the counters let tests prove.
"""

from __future__ import annotations

import random
import secrets
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.providers import money
from adapters.providers.base import InstructionStatus
from adapters.providers.wire import CancelResponse, InstructionIn, InstructionResult, InstructionView

Event = tuple[str, dict[str, Any]]

DEFAULT_VOUCHER_VALIDITY_DAYS = 90
_DECLINES = (
    ("kyc_incomplete", False),
    ("beneficiary_blocked", False),
    ("issuer_unavailable", True),
    ("processing_timeout", True),
)
_VOUCHER_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


class Refused(Exception):
    """A request the provider declines as a whole, rendered as an error body with `status_code`."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message


@dataclass(slots=True)
class Card:
    token: str
    last4: str
    loads: int = 0


@dataclass(slots=True)
class Instruction:
    request: InstructionIn
    provider_ref: str
    status: InstructionStatus = "received"
    attempts: int = 1
    card: Card | None = None
    voucher_code: str | None = None
    expires_at: datetime | None = None
    remaining_minor: int | None = None
    reason: str | None = None
    retryable: bool | None = None

    @property
    def key(self) -> str:
        return self.request.idempotency_key

    def result(self) -> InstructionResult:
        return InstructionResult(
            idempotency_key=self.key, accepted=True, status=self.status, provider_ref=self.provider_ref
        )

    def ref(self) -> dict[str, Any]:
        return {"entitlement_id": self.key, "provider_ref": self.provider_ref}


@dataclass
class ProviderState:
    rng: random.Random
    """Decides declines only, so a seeded run injects the same faults; references and codes use `secrets`."""
    instructions: dict[str, Instruction] = field(default_factory=dict)
    cancelled_unseen: set[str] = field(default_factory=set)
    calls_per_key: Counter[str] = field(default_factory=Counter)
    cards: dict[str, Card] = field(default_factory=dict)
    vouchers: dict[str, str] = field(default_factory=dict)
    issued_minor: Counter[str] = field(default_factory=Counter)
    items_received: int = 0
    repeated_keys: int = 0
    card_loads: int = 0
    vouchers_issued: int = 0
    failed: int = 0
    cancelled: int = 0
    redemptions: int = 0
    vouchers_expired: int = 0

    def receive(self, item: InstructionIn) -> tuple[InstructionResult, Instruction | None]:
        """Record one instruction; also returns it when it (again) needs processing.

        A key seen before is answered from the record (same provider_ref, nothing new happens) unless its
        last attempt failed, in which case the same instruction is attempted again: a failure moved no
        money, so retrying under the same key cannot pay twice.
        """
        key = item.idempotency_key
        self.items_received += 1
        self.calls_per_key[key] += 1
        if self.calls_per_key[key] == 2:
            self.repeated_keys += 1
        if key in self.cancelled_unseen:
            return _declined(key, "cancelled", None, "instruction_cancelled", "cancelled before arrival"), None
        existing = self.instructions.get(key)
        if existing is None:
            invalid = _invalid(item)
            if invalid is not None:
                return _declined(key, "unknown", None, *invalid), None
            instruction = Instruction(request=item, provider_ref=f"prv_{secrets.token_hex(12)}")
            self.instructions[key] = instruction
            return instruction.result(), instruction
        if existing.request != item:
            return _declined(
                key,
                existing.status,
                existing.provider_ref,
                "idempotency_conflict",
                "a different instruction was already received under this key",
            ), None
        if existing.status == "cancelled":
            return _declined(
                key, "cancelled", existing.provider_ref, "instruction_cancelled", "instruction was cancelled"
            ), None
        if existing.status == "failed":
            existing.status, existing.reason, existing.retryable = "received", None, None
            existing.attempts += 1
            return existing.result(), existing
        return existing.result(), None

    def process(self, instruction: Instruction, decline_rate: float) -> Event | None:
        """Issue (load the card / create the voucher) or decline; None if cancelled in the meantime."""
        if instruction.status != "received":
            return None
        request = instruction.request
        if decline_rate and self.rng.random() < decline_rate:
            instruction.reason, instruction.retryable = self.rng.choice(_DECLINES)
            instruction.status = "failed"
            self.failed += 1
            return "entitlement.failed", {
                **instruction.ref(),
                "reason": instruction.reason,
                "retryable": instruction.retryable,
            }
        data = instruction.ref()
        if request.product == "prepaid_card":
            card = self.cards.get(request.beneficiary_ref)
            if card is None:
                card = Card(token=f"tok_{secrets.token_hex(12)}", last4=f"{secrets.randbelow(10_000):04d}")
                self.cards[request.beneficiary_ref] = card
            card.loads += 1
            self.card_loads += 1
            instruction.card = card
            data.update(card_token=card.token, card_last4=card.last4)
        else:
            code = self._new_voucher_code()
            self.vouchers[code] = instruction.key
            self.vouchers_issued += 1
            days = request.voucher_validity_days or DEFAULT_VOUCHER_VALIDITY_DAYS
            instruction.voucher_code = code
            instruction.expires_at = datetime.now(UTC) + timedelta(days=days)
            instruction.remaining_minor = request.amount_minor
            data["voucher_code"] = code
        instruction.status = "issued"
        self.issued_minor[request.currency] += request.amount_minor
        return "entitlement.issued", data

    def cancel(self, key: str, provider_ref: str | None) -> tuple[int, CancelResponse]:
        """Cancel what has not moved money yet; an unseen key is remembered so it can never be issued."""
        instruction = self.instructions.get(key)
        if instruction is None:
            if key not in self.cancelled_unseen:
                self.cancelled_unseen.add(key)
                self.cancelled += 1
            return 200, CancelResponse(idempotency_key=key, cancelled=True, status="cancelled")
        if provider_ref is not None and provider_ref != instruction.provider_ref:
            return 409, _cancel_refused(instruction, "provider_ref_mismatch", "provider_ref does not match")
        unused_voucher = (
            instruction.status == "issued"
            and instruction.request.product == "voucher"
            and instruction.remaining_minor == instruction.request.amount_minor
        )
        if instruction.status in ("received", "failed") or unused_voucher:
            instruction.status = "cancelled"
            if unused_voucher:
                instruction.remaining_minor = 0
            self.cancelled += 1
        elif instruction.status != "cancelled":
            return 409, _cancel_refused(
                instruction, f"not_cancellable_{instruction.status}", f"instruction is {instruction.status}"
            )
        return 200, CancelResponse(
            idempotency_key=key, cancelled=True, status="cancelled", provider_ref=instruction.provider_ref
        )

    def view(self, key: str) -> InstructionView | None:
        instruction = self.instructions.get(key)
        if instruction is None:
            if key in self.cancelled_unseen:
                return InstructionView(idempotency_key=key, status="cancelled")
            return None
        request = instruction.request
        return InstructionView(
            idempotency_key=key,
            status=instruction.status,
            provider_ref=instruction.provider_ref,
            product=request.product,
            amount_minor=request.amount_minor,
            remaining_minor=instruction.remaining_minor,
            currency=request.currency,
            card_token=instruction.card.token if instruction.card else None,
            card_last4=instruction.card.last4 if instruction.card else None,
            voucher_code=instruction.voucher_code,
            expires_at=instruction.expires_at,
            reason=instruction.reason,
            retryable=instruction.retryable,
        )

    def redeem(self, voucher_code: str, amount_minor: int, merchant: str) -> Event:
        """A purchase at a merchant; partial redemptions leave the voucher `issued` with a remainder."""
        instruction = self._active_voucher(voucher_code)
        remaining = instruction.remaining_minor or 0
        if amount_minor > remaining:
            raise Refused(409, "exceeds_remaining", f"voucher has {remaining} minor units left")
        instruction.remaining_minor = remaining - amount_minor
        if instruction.remaining_minor == 0:
            instruction.status = "redeemed"
        self.redemptions += 1
        currency = instruction.request.currency
        return "voucher.redeemed", {
            **instruction.ref(),
            "amount": {"amount": money.to_decimal(amount_minor, currency), "currency": currency},
            "merchant": merchant,
        }

    def expire(self, voucher_code: str) -> Event:
        instruction = self._active_voucher(voucher_code)
        instruction.status = "expired"
        self.vouchers_expired += 1
        return "voucher.expired", instruction.ref()

    def counters(self, *, per_key: bool) -> dict[str, Any]:
        calls = self.calls_per_key
        counters: dict[str, Any] = {
            "instruction_items_received": self.items_received,
            "distinct_keys": len(calls),
            "keys_received_more_than_once": self.repeated_keys,
            "card_loads": self.card_loads,
            "distinct_cards_loaded": len(self.cards),
            "vouchers_issued": self.vouchers_issued,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "redemptions": self.redemptions,
            "vouchers_expired": self.vouchers_expired,
            "issued_minor": dict(self.issued_minor),
        }
        if per_key:
            counters["instructions_received"] = dict(calls)
        return counters

    def _active_voucher(self, voucher_code: str) -> Instruction:
        key = self.vouchers.get(voucher_code)
        if key is None:
            raise Refused(404, "not_found", "no such voucher")
        instruction = self.instructions[key]
        if instruction.status != "issued":
            raise Refused(409, f"voucher_{instruction.status}", f"voucher is {instruction.status}")
        return instruction

    def _new_voucher_code(self) -> str:
        while True:
            code = "".join(secrets.choice(_VOUCHER_ALPHABET) for _ in range(12))
            code = f"{code[:4]}-{code[4:8]}-{code[8:]}"
            if code not in self.vouchers:
                return code


def _invalid(item: InstructionIn) -> tuple[str, str] | None:
    """Per-item checks: one bad item is declined on its own instead of failing the whole chunk."""
    try:
        money.currency_exponent(item.currency)
    except ValueError:
        return "invalid_currency", f"unknown currency {item.currency!r}"
    if item.amount_minor <= 0:
        return "invalid_amount", "amount_minor must be positive"
    if item.voucher_validity_days is not None and item.voucher_validity_days < 1:
        return "invalid_validity", "voucher_validity_days must be at least 1"
    return None


def _declined(
    key: str, status: InstructionStatus, provider_ref: str | None, code: str, message: str
) -> InstructionResult:
    return InstructionResult(
        idempotency_key=key,
        accepted=False,
        status=status,
        provider_ref=provider_ref,
        error_code=code,
        error_message=message,
    )


def _cancel_refused(instruction: Instruction, code: str, message: str) -> CancelResponse:
    return CancelResponse(
        idempotency_key=instruction.key,
        cancelled=False,
        status=instruction.status,
        provider_ref=instruction.provider_ref,
        error_code=code,
        error_message=message,
    )
