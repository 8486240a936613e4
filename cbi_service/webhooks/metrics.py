"""Prometheus counters for provider webhooks, labelled by provider and event type.

Label values are bounded: an unknown provider never reaches these counters (it is a 404), and an event
whose type cannot be read is counted as type "unknown" rather than whatever string the body carried.
"""

from __future__ import annotations

from typing import get_args

from prometheus_client import Counter

from adapters.providers.base import EventType

KNOWN_TYPES = frozenset(get_args(EventType))
UNKNOWN_TYPE = "unknown"

RECEIVED = Counter(
    "cbi_webhook_events_received_total", "Authentic, well-formed webhook events stored", ["provider", "type"]
)
DUPLICATE = Counter(
    "cbi_webhook_events_duplicate_total", "Redelivered webhook ids acknowledged without effect", ["provider", "type"]
)
REJECTED = Counter(
    "cbi_webhook_events_rejected_total",
    "Webhooks refused at the edge: bad signature (401), malformed body (400), invalid event (422), or a full "
    "card number in it (card_number: kept redacted for review, 202)",
    ["provider", "type", "reason"],
)
APPLIED = Counter(
    "cbi_webhook_events_applied_total",
    "Stored events run through the entitlement state machine, by outcome (applied, ignored, refused, failed)",
    ["provider", "type", "outcome"],
)
UNMATCHED = Counter(
    "cbi_webhook_events_unmatched_total",
    "Events for an entitlement not (yet) known, kept for review",
    ["provider", "type"],
)


def type_label(event_type: object) -> str:
    return event_type if isinstance(event_type, str) and event_type in KNOWN_TYPES else UNKNOWN_TYPE
