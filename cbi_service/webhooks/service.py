"""The provider-webhook inbox: store every authentic event once, then apply it to the entitlements.

Acknowledging costs a share of one group-committed INSERT ... ON CONFLICT DO NOTHING (see `inbox`), so
providers get their 2xx fast and the HTTP path never queues behind the ledger's per-programme account
locks. The worker applies stored events in chunks of one transaction each, in the provider's event-time
order: events that arrive out of order within a chunk are applied in the order they happened, and the
entitlement state machine turns any that still arrive late into no-ops. Events for entitlements not
(yet) known wait as `unmatched` and are queued again once their entitlement exists; an event that keeps
raising is set aside as `failed` after a few attempts instead of blocking the queue.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.providers.base import CallbackEvent, MalformedEvent, ProviderEvent, SignedCallback
from adapters.providers.card_numbers import contains_pan, redact_pans
from cbi_service.accounting.service import InsufficientBalance
from cbi_service.batches.models import RELEASED_STATUSES
from cbi_service.entitlements import service as entitlements
from cbi_service.entitlements.models import Entitlement
from cbi_service.entitlements.repository import EntitlementRepository
from cbi_service.kit.errors import field_errors
from cbi_service.kit.ids import new_id
from cbi_service.reconciliation import breaks
from cbi_service.webhooks import metrics
from cbi_service.webhooks.models import WebhookEvent
from cbi_service.webhooks.repository import AppliedEvent, InboxRow, Target, WebhookRepository
from cbi_service.webhooks.schemas import ReviewEnvelope
from cbi_service.webhooks.signatures import SignedMessage

log = structlog.get_logger(__name__)

APPLY_CHUNK = 200
CHUNK_SECONDS = 0.5
"""A chunk stops taking new events after this long: it holds its programmes' ledger locks until it commits."""
MAX_APPLY_ATTEMPTS = 5
_STATUS_OF_OUTCOME = {"applied": "applied", "noop": "ignored", "refused": "refused"}
_SETTLED = frozenset({"failed", "cancelled"})
_OPTIONAL_FIELDS = tuple(
    f.name for f in fields(ProviderEvent) if f.name not in {"type", "timestamp", "entitlement_id", "provider_ref"}
)
encode_json = json.JSONEncoder(separators=(",", ":")).encode
"""Compact JSON text: the stored reading of an event, and the webhook acknowledgement."""
_STRING_FIELDS = tuple(f.name for f in fields(ProviderEvent) if str(f.type).startswith("str"))


def inbox_row(provider: str, message: SignedMessage, event: ProviderEvent) -> InboxRow:
    """What the inbox keeps of a verified event: the signed bytes and the adapter's reading of them."""
    return InboxRow(
        id=new_id(),
        provider=provider,
        webhook_id=message.webhook_id,
        event_type=event.type,
        entitlement_id=event.entitlement_id,
        provider_ref=event.provider_ref,
        occurred_at=event.timestamp,
        signed_at=message.signed_at,
        body=message.body,
        event=encode_json(event_to_json(event)),
    )


def callback_row(provider: str, callback: SignedCallback, item: CallbackEvent) -> InboxRow:
    """One outcome of a verified callback message (G2P Connect), stored under the message id and its key:
    a redelivered message, or one outcome listed twice, has no second effect. The row keeps the part of the
    message it was read from (`item.record`, no personal data) rather than the whole signed message, which
    would be stored once per outcome."""
    event = item.event
    return InboxRow(
        id=new_id(),
        provider=provider,
        webhook_id=f"{callback.message_id}/{item.key}",
        event_type=event.type,
        entitlement_id=event.entitlement_id,
        provider_ref=event.provider_ref,
        occurred_at=event.timestamp,
        signed_at=callback.signed_at,
        body=item.record,
        event=encode_json(event_to_json(event)),
    )


_ENVELOPE_FIELDS = frozenset({"type", "timestamp", "data"})
_NOT_CARD_FIELDS = frozenset(
    {"entitlement_id", "provider_ref", "voucher_code", "reason", "retryable", "amount", "currency", "merchant"}
)
"""Fields of `data` the contract gives another meaning: references, merchant ids and amounts may be long
numbers, and a voucher code may follow the Luhn scheme; they are not read as card numbers."""
_CARD_FIELDS = ("card_token", "card_last4")


def _holds_pan(value: object) -> bool:
    if isinstance(value, Mapping):
        return any(_holds_pan(item) for item in value.values())
    if isinstance(value, list):
        return any(_holds_pan(item) for item in value)
    return contains_pan(value)


def card_number_fields(payload: object, event: ProviderEvent | None = None) -> list[str]:
    """The fields of a webhook body that hold what looks like a full card number (CONTRACT §7: never stored).

    Read: the card fields, as sent and as the adapter mapped them (a third-party adapter may read them from
    other names), and every field the contract does not define, which would otherwise reach only the
    stored body.
    """
    found: list[str] = []
    if isinstance(payload, Mapping):
        found += [str(key) for key, value in payload.items() if key not in _ENVELOPE_FIELDS and _holds_pan(value)]
        data = payload.get("data")
        if isinstance(data, Mapping):
            found += [f"data.{key}" for key, value in data.items() if key not in _NOT_CARD_FIELDS and _holds_pan(value)]
    if event is not None:
        mapped = [f"data.{name}" for name in _CARD_FIELDS if contains_pan(getattr(event, name))]
        found += [name for name in mapped if name not in found]
    return found


def card_number_row(provider: str, message: SignedMessage, payload: object, fields: Sequence[str]) -> InboxRow:
    """An event that carries a card number, kept for review without it: `refused`, never applied.

    What is stored is the body with every number that looks like a PAN redacted (so it no longer matches
    its signature, which is why the event is kept for review only) and a reading of it without any card
    details. Raises `MalformedEvent` when even the redacted body does not say what happened to which
    entitlement.
    """
    redacted = redact_pans(payload)
    try:
        envelope = ReviewEnvelope.model_validate(redacted)
    except ValidationError as exc:
        raise MalformedEvent("malformed provider event", field_errors(exc)) from None
    event = ProviderEvent(
        type=envelope.type,
        timestamp=envelope.timestamp,
        entitlement_id=envelope.data.entitlement_id,
        provider_ref=envelope.data.provider_ref,
    )
    if has_nul(event):
        raise MalformedEvent("NUL character", [{"field": "data", "message": "must not contain U+0000"}])
    return inbox_row(provider, message, event)._replace(
        body=encode_json(redacted),
        status="refused",
        detail=f"a full card number in {', '.join(fields)}: redacted, not applied",
    )


def has_nul(event: ProviderEvent) -> bool:
    """PostgreSQL text cannot hold U+0000: an event carrying one is refused rather than failing to store.

    Only the adapter's fields need the check: the raw body passed `json.loads`, which refuses raw
    control characters, so U+0000 can only be in it as the six characters of an escape.
    """
    return any("\x00" in value for value in (getattr(event, name) for name in _STRING_FIELDS) if value)


def event_to_json(event: ProviderEvent) -> dict[str, Any]:
    """The adapter's reading of the body, kept with it so applying never depends on adapter versions."""
    data: dict[str, Any] = {
        "type": event.type,
        "timestamp": event.timestamp.isoformat(),
        "entitlement_id": str(event.entitlement_id),
        "provider_ref": event.provider_ref,
    }
    for name in _OPTIONAL_FIELDS:
        value = getattr(event, name)
        if value is not None:
            data[name] = value
    return data


def event_from_json(data: dict[str, Any]) -> ProviderEvent:
    return ProviderEvent(
        **{
            **data,
            "timestamp": datetime.fromisoformat(data["timestamp"]),
            "entitlement_id": uuid.UUID(data["entitlement_id"]),
        }
    )


Verdict = tuple[str, str | None]
"""An event's inbox status and its detail."""


def precheck(provider: str, event: ProviderEvent, target: Target | None) -> Verdict | None:
    """The verdict on an event that must not reach the state machine, or None if it may.

    A provider may only move entitlements of programmes it serves, that were released to it, and a
    redemption must be in the entitlement's currency: a signed event that fails a check is refused.
    """
    if target is None:
        return "unmatched", None
    if target.provider != provider:
        return "refused", f"the entitlement is served by provider {target.provider!r}"
    if target.batch_status not in RELEASED_STATUSES:
        return "refused", f"the entitlement's batch is {target.batch_status}, not released to the provider"
    if event.type == "voucher.redeemed" and event.currency != target.currency:
        return "refused", f"redemption in {event.currency}, the entitlement is in {target.currency}"
    return None


async def apply_event(
    session: AsyncSession, provider: str, event: ProviderEvent, *, event_id: uuid.UUID, maybe_failed: bool = True
) -> Verdict:
    """Run one checked event (stored as `event_id`) through the entitlement state machine.

    A confirmation the ledger cannot record (see `reconciliation.breaks`) is refused and kept as a
    reconciliation break, in this transaction. `maybe_failed=False` says the entitlement is known not to
    be failed, so a redemption cannot need its budget reserved again and runs without a savepoint.
    """
    entitlement_id = event.entitlement_id
    if event.type == "entitlement.issued":
        try:
            async with session.begin_nested():
                transition = await entitlements.mark_issued(
                    session,
                    entitlement_id,
                    event.provider_ref,
                    card_token=event.card_token,
                    card_last4=event.card_last4,
                    voucher_code=event.voucher_code,
                    at=event.timestamp,
                    source=provider,
                )
        except InsufficientBalance:
            return await _issue_break(session, provider, event, event_id) or ("refused", "the budget cannot cover it")
        if transition.outcome == "noop" and transition.previous_status == "cancelled":
            return await _issue_break(session, provider, event, event_id) or ("ignored", transition.detail)
    elif event.type == "entitlement.failed":
        transition = await entitlements.mark_failed(
            session,
            entitlement_id,
            event.reason or "unspecified",
            bool(event.retryable),
            provider_ref=event.provider_ref,
            source=provider,
        )
    elif event.type == "voucher.redeemed":
        assert event.amount_minor is not None
        assert event.merchant is not None
        amount, merchant = event.amount_minor, event.merchant
        redeem = entitlements.mark_redeemed(session, entitlement_id, amount, merchant, source=provider)
        if not maybe_failed:
            transition = await redeem
        else:
            try:
                async with session.begin_nested():
                    transition = await redeem
            except InsufficientBalance:
                return await _failure_redemption_break(session, provider, event, event_id)
        if transition.outcome == "refused" and transition.previous_status == "expired":
            return await _redemption_break(session, provider, event, event_id) or ("refused", transition.detail)
    elif event.type == "voucher.expired":
        transition = await entitlements.mark_expired(session, entitlement_id, source=provider)
    else:
        raise ValueError(f"no handling for event type {event.type!r}")
    return _STATUS_OF_OUTCOME[transition.outcome], transition.detail


async def _issue_break(
    session: AsyncSession, provider: str, event: ProviderEvent, event_id: uuid.UUID
) -> Verdict | None:
    """A load confirmed for an entitlement whose budget went back to available (failed, or cancelled before
    it was ever issued) and cannot be taken again: a break of `amount` from available to disbursed. None
    for a cancelled entitlement that was issued before (the event repeats a recorded issue)."""
    entitlement = await _locked(session, event.entitlement_id)
    if entitlement.status == "cancelled" and entitlement.issued_at is not None:
        return None
    if entitlement.status == "failed":
        kind, why = "issued_after_failure", "after it failed, and the budget released then is no longer available"
    else:
        kind, why = "issued_after_cancel", f"after it was {entitlement.status} and its budget released"
    found = breaks.Break(kind, entitlement.amount_minor, "available", "disbursed", f"the provider issued it {why}")
    return await _keep_break(session, provider, event, event_id, entitlement, found)


async def _redemption_break(
    session: AsyncSession, provider: str, event: ProviderEvent, event_id: uuid.UUID
) -> Verdict | None:
    """A redemption stamped before the voucher's expiry, which already returned the value to the budget: a
    break of the redeemed amount from available to redeemed. None for one stamped after the expiry (the
    voucher was no longer valid) or above what the expiry returned: those stay refused."""
    assert event.amount_minor is not None
    entitlement = await _locked(session, event.entitlement_id)
    history = await EntitlementRepository(session).history(entitlement.id)
    ends = [change.occurred_at for change in history if change.to_status == "expired"]
    if entitlement.expires_at is not None:
        ends.append(entitlement.expires_at)
    if not ends or event.timestamp >= min(ends) or event.amount_minor > entitlement.remaining_minor:
        return None
    found = breaks.Break(
        "redeemed_after_expiry",
        event.amount_minor,
        "available",
        "redeemed",
        f"redeemed at {event.timestamp.isoformat()}, before the voucher expired at {min(ends).isoformat()};"
        " the expiry returned its value to the budget",
    )
    return await _keep_break(session, provider, event, event_id, entitlement, found)


async def _failure_redemption_break(
    session: AsyncSession, provider: str, event: ProviderEvent, event_id: uuid.UUID
) -> Verdict:
    """A redemption of a voucher whose entitlement failed here (the provider had issued it after all) and
    whose budget, released at the failure, other payments have taken since: a break of the redeemed amount
    from available to redeemed. Each redemption is its own break, as a voucher may be spent in parts."""
    assert event.amount_minor is not None
    entitlement = await _locked(session, event.entitlement_id)
    assert entitlement.status == "failed", "only a failed entitlement's redemption reserves budget"
    found = breaks.Break(
        "redeemed_after_failure",
        event.amount_minor,
        "available",
        "redeemed",
        "the provider reports a redemption of a voucher that failed here; the budget released at the failure"
        " is no longer available, so neither its issue nor the redemption could be posted",
    )
    return await _keep_break(session, provider, event, event_id, entitlement, found)


async def _locked(session: AsyncSession, entitlement_id: uuid.UUID) -> Entitlement:
    entitlement = await EntitlementRepository(session).get(entitlement_id, for_update=True, populate_existing=True)
    assert entitlement is not None, "prechecked: the entitlement exists"
    return entitlement


async def _keep_break(
    session: AsyncSession,
    provider: str,
    event: ProviderEvent,
    event_id: uuid.UUID,
    entitlement: Entitlement,
    found: breaks.Break,
) -> Verdict:
    (programme,) = await WebhookRepository(session).programmes({entitlement.programme_id})
    await breaks.record_break(
        session,
        found,
        provider=provider,
        webhook_event_id=event_id,
        event=event,
        entitlement=entitlement,
        programme=programme,
    )
    return "refused", f"reconciliation break ({found.kind}): {found.detail}"


@dataclass(frozen=True)
class ApplyRun:
    claimed: int
    left: int
    """Claimed but not attempted before the chunk ran out of time; they stay queued."""
    statuses: dict[str, int]

    @property
    def failed(self) -> int:
        return self.statuses.get("received", 0) + self.statuses.get("failed", 0)


async def apply_pending(session_factory: async_sessionmaker[AsyncSession], *, limit: int = APPLY_CHUNK) -> ApplyRun:
    """Apply one chunk of stored events in one transaction; each event's effects commit with its status.

    The chunk's first `entitlement.issued` per entitlement go through the state machine's bulk path in a
    few statements (an issue commutes with every other event: a late one only fills in missing details);
    the others run one by one in event-time order. A chunk runs without savepoints (two round trips per
    event saved); if anything in it raises, it is rolled back and run again with a savepoint per event,
    so one failing event is set aside alone and the others still apply.
    """
    try:
        return await _apply_chunk(session_factory, limit, isolated=False)
    except Exception as exc:
        log.info("webhook_chunk_retried_in_isolation", error=type(exc).__name__)
        return await _apply_chunk(session_factory, limit, isolated=True)


async def _apply_chunk(session_factory: async_sessionmaker[AsyncSession], limit: int, *, isolated: bool) -> ApplyRun:
    async with session_factory.begin() as session:
        repo = WebhookRepository(session)
        stored = await repo.claim_pending(limit)
        events = {row.id: event_from_json(row.event) for row in stored}
        targets = await repo.targets({event.entitlement_id for event in events.values()})
        # Held for the whole chunk: the session's identity map keeps only objects someone references, and
        # with them held the state machine finds each programme without a query per event.
        _held = await repo.programmes({target.programme_id for target in targets.values()})
        verdicts: dict[uuid.UUID, Verdict] = {}
        for row in stored:
            verdict = precheck(row.provider, events[row.id], targets.get(events[row.id].entitlement_id))
            if verdict is not None:
                verdicts[row.id] = verdict
        pending = [(row, events[row.id]) for row in stored if row.id not in verdicts]
        # Loads for entitlements whose budget went back to available may be breaks: they run one by one.
        bulk = [(row, event) for row, event in pending if targets[event.entitlement_id].status not in _SETTLED]
        verdicts |= await _issue_in_bulk(session, bulk, isolated=isolated)
        deadline = time.monotonic() + CHUNK_SECONDS
        for row, event in pending:
            if row.id in verdicts:
                continue
            failed = targets[event.entitlement_id].status == "failed"
            verdicts[row.id] = await _apply_one(session, row, event, isolated=isolated, failed=failed)
            if time.monotonic() >= deadline:
                break
        outcomes = [_outcome(row, verdicts[row.id]) for row in stored if row.id in verdicts]
        await repo.record(outcomes)
    breaks.count_committed(session, {outcome.id for outcome in outcomes if outcome.status == "refused"})
    for row, outcome in zip((row for row in stored if row.id in verdicts), outcomes, strict=True):
        labels = (row.provider, metrics.type_label(row.event_type))
        if outcome.status == "unmatched":
            metrics.UNMATCHED.labels(*labels).inc()
        elif outcome.status != "received":
            metrics.APPLIED.labels(*labels, outcome.status).inc()
    statuses = dict(Counter(outcome.status for outcome in outcomes))
    return ApplyRun(len(stored), len(stored) - len(outcomes), statuses)


async def _issue_in_bulk(
    session: AsyncSession, rows: Sequence[tuple[WebhookEvent, ProviderEvent]], *, isolated: bool
) -> dict[uuid.UUID, Verdict]:
    """Verdicts for the issues applied in bulk; in isolation, a bulk call that raised leaves them to run alone."""
    first: dict[uuid.UUID, tuple[WebhookEvent, ProviderEvent]] = {}
    for row, event in rows:
        if event.type == "entitlement.issued":
            first.setdefault(event.entitlement_id, (row, event))
    verdicts: dict[uuid.UUID, Verdict] = {}
    for provider in {row.provider for row, _ in first.values()}:
        chosen = [(row, event) for row, event in first.values() if row.provider == provider]
        issued = [
            entitlements.Issued(
                entitlement_id=event.entitlement_id,
                provider_ref=event.provider_ref,
                card_token=event.card_token,
                card_last4=event.card_last4,
                voucher_code=event.voucher_code,
                at=event.timestamp,
            )
            for _, event in chosen
        ]
        if not isolated:
            transitions = await entitlements.mark_issued_many(session, issued, source=provider)
        else:
            try:
                async with session.begin_nested():
                    transitions = await entitlements.mark_issued_many(session, issued, source=provider)
            except Exception as exc:
                log.warning("webhook_bulk_issue_error", provider=provider, size=len(issued), error=type(exc).__name__)
                continue
        for row, event in chosen:
            transition = transitions.get(event.entitlement_id)
            if transition is not None and (transition.outcome, transition.previous_status) != ("noop", "cancelled"):
                verdicts[row.id] = _STATUS_OF_OUTCOME[transition.outcome], transition.detail
    return verdicts


async def _apply_one(
    session: AsyncSession, row: WebhookEvent, event: ProviderEvent, *, isolated: bool, failed: bool
) -> Verdict:
    """`failed`: the entitlement was failed when the chunk began, so a redemption of it needs a savepoint.
    One failed earlier in the chunk got its budget back in it; should the chunk have spent that budget
    meanwhile, its redemption raises and the chunk runs again isolated, where every redemption has one."""
    if not isolated:
        return await apply_event(session, row.provider, event, event_id=row.id, maybe_failed=failed)
    try:
        async with session.begin_nested():
            return await apply_event(session, row.provider, event, event_id=row.id)
    except Exception as exc:
        log.warning("webhook_apply_error", event_id=str(row.id), attempts=row.attempts + 1, exc_info=exc)
        status = "failed" if row.attempts + 1 >= MAX_APPLY_ATTEMPTS else "received"
        return status, f"error: {type(exc).__name__}"


def _outcome(row: WebhookEvent, verdict: Verdict) -> AppliedEvent:
    return AppliedEvent(row.id, verdict[0], row.attempts + 1, verdict[1])


async def drain(session_factory: async_sessionmaker[AsyncSession], *, max_seconds: float) -> int:
    """Apply chunks until the queue is empty, a chunk had a failing event, or `max_seconds` passed."""
    deadline = time.monotonic() + max_seconds
    applied = 0
    while True:
        run = await apply_pending(session_factory)
        applied += run.claimed - run.left
        if (run.claimed < APPLY_CHUNK and not run.left) or run.failed or time.monotonic() >= deadline:
            return applied
