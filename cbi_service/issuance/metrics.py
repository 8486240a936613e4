"""Prometheus counters of issuance and of every call to a provider, in the process that makes them.

Labels are bounded: provider names come from CBI_PROVIDERS, operations and outcomes are the fixed sets below.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Literal

from prometheus_client import Counter, Histogram

from adapters.providers.base import PermanentProviderError, TransientProviderError

Operation = Literal["issue", "cancel", "status"]

CHUNKS = Counter(
    "cbi_issuance_chunks_total",
    "Chunks of entitlements sent to a provider, by outcome: answered (an outcome per entitlement) or refused "
    "(the provider refused the whole request)",
    ["provider", "outcome"],
)
INSTRUCTIONS = Counter(
    "cbi_issuance_instructions_total",
    "Entitlements sent to a provider in chunks, by the provider's answer: accepted, declined or refused",
    ["provider", "outcome"],
)
CALLS = Counter(
    "cbi_provider_calls_total",
    "Calls to a provider adapter, by operation and outcome: ok, transient (timeout, connection error, 5xx, "
    "429: retried), permanent (a refusal) or error (anything else)",
    ["provider", "operation", "outcome"],
)
CALL_DURATION = Histogram(
    "cbi_provider_call_duration_seconds",
    "How long one call to a provider adapter took",
    ["provider", "operation"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


@contextlib.contextmanager
def provider_call(provider: str, operation: Operation) -> Iterator[None]:
    """Count and time the provider call made inside, whatever its outcome."""
    started = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    except TransientProviderError:
        outcome = "transient"
        raise
    except PermanentProviderError:
        outcome = "permanent"
        raise
    finally:
        CALL_DURATION.labels(provider, operation).observe(time.perf_counter() - started)
        CALLS.labels(provider, operation, outcome).inc()
