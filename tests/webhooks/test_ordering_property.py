"""Property: a shuffled stream with redeliveries ends in exactly the state of the ordered stream.

Two identical programmes receive the same per-entitlement event histories. The first gets them in order,
each applied before the next arrives. The second gets them shuffled across entitlements, with about one
event in ten delivered twice (same webhook-id), and the worker runs at arbitrary points in between, so
events arrive both before and after the ones that preceded them. Entitlement statuses, redeemed and
remaining values, voucher codes and every programme balance must come out the same.

The histories are those a provider can produce whose outcome does not depend on arrival order: a
redemption that arrives after its voucher expired is refused for review (see test_apply), so expiries
are generated for vouchers without redemptions.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.issuance.support import assert_identity, balances
from tests.webhooks.support import (
    Released,
    apply_all,
    deliver,
    entitlement,
    event_body,
    released_entitlements,
)

SCENARIOS = ("issued", "failed", "failed_then_issued", "redeemed", "expired")


@dataclass(frozen=True)
class Step:
    """One provider event of one entitlement's history (the entitlement is picked per programme)."""

    index: int
    type: str
    data: dict[str, object]
    at: datetime


@st.composite
def histories(draw: st.DrawFn) -> list[list[Step]]:
    start = datetime.now(UTC) - timedelta(minutes=4)
    tick = iter(range(10_000))
    result = []
    for index in range(draw(st.integers(min_value=2, max_value=4))):
        scenario = draw(st.sampled_from(SCENARIOS))

        def step(event_type: str, **data: object) -> Step:
            return Step(index, event_type, data, start + timedelta(seconds=next(tick)))  # noqa: B023

        issued = step("entitlement.issued", voucher_code=f"VCH-{index}")
        if scenario == "issued":
            steps = [issued]
        elif scenario == "failed":
            steps = [step("entitlement.failed", reason="declined", retryable=False)]
        elif scenario == "failed_then_issued":
            steps = [step("entitlement.failed", reason="timeout", retryable=True), issued]
        elif scenario == "redeemed":
            parts = draw(st.lists(st.integers(min_value=1, max_value=33), min_size=1, max_size=3))
            steps = [issued] + [
                step("voucher.redeemed", amount={"amount": f"{part * 1000}.00", "currency": "COP"}, merchant="M")
                for part in parts
            ]
        else:
            steps = [issued, step("voucher.expired")]
        result.append(steps)
    return result


def _body(step: Step, released: Released, webhook_id_prefix: str) -> tuple[str, bytes]:
    target = released.entitlements[step.index].id
    body = event_body(step.type, target, timestamp=step.at.isoformat(), provider_ref=f"prv-{step.index}", **step.data)
    return f"{webhook_id_prefix}-{step.index}-{step.at.timestamp()}", body


async def _state(client, session_factory, released: Released) -> tuple[list[tuple], dict[str, str]]:
    rows = []
    for e in released.entitlements:
        found = await entitlement(session_factory, e.id)
        rows.append((found.status, found.redeemed_minor, found.amount_minor - found.redeemed_minor, found.voucher_code))
    figures = await balances(client, released.actors, released.programme["id"])
    assert_identity(figures)
    return rows, figures


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), stream=histories())
async def test_a_shuffled_stream_with_duplicates_ends_like_the_ordered_stream(
    client, api_key_factory, session_factory, data, stream
):
    count = len(stream)
    ordered = await released_entitlements(client, api_key_factory, session_factory, count=count)
    shuffled = await released_entitlements(client, api_key_factory, session_factory, count=count)
    steps = sorted((s for history in stream for s in history), key=lambda s: s.at)
    run = uuid.uuid4().hex[:8]

    for step in steps:
        webhook_id, body = _body(step, ordered, f"o{run}")
        assert (await deliver(client, "vouchers", body, webhook_id=webhook_id)).status_code == 202
        await apply_all(session_factory)

    deliveries = data.draw(st.permutations(steps), label="arrival order")
    tenth = max(1, round(len(steps) / 10))
    repeats = data.draw(st.lists(st.sampled_from(steps), min_size=tenth, max_size=tenth), label="redelivered")
    deliveries = list(deliveries)
    for repeat in repeats:
        deliveries.insert(data.draw(st.integers(0, len(deliveries)), label="redelivery position"), repeat)
    apply_after = data.draw(st.lists(st.booleans(), min_size=len(deliveries), max_size=len(deliveries)))
    for step, apply_now in zip(deliveries, apply_after, strict=True):
        webhook_id, body = _body(step, shuffled, f"s{run}")
        assert (await deliver(client, "vouchers", body, webhook_id=webhook_id)).status_code in (200, 202)
        if apply_now:
            await apply_all(session_factory)
    await apply_all(session_factory)

    ordered_rows, ordered_figures = await _state(client, session_factory, ordered)
    shuffled_rows, shuffled_figures = await _state(client, session_factory, shuffled)
    assert shuffled_rows == ordered_rows
    assert shuffled_figures == ordered_figures
