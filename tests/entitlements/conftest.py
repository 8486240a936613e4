import pytest

from tests.issuance.fixtures import settings, simulator, simulator_process
from tests.issuance.support import approved_batch, entitlements_of, fund, make_actors, release, seed_beneficiaries
from tests.support import make_programme

__all__ = ["settings", "simulator", "simulator_process", "voucher_batch"]


@pytest.fixture
async def voucher_batch(client, api_key_factory, session_factory):
    """A released voucher batch of three 100,000.00 entitlements, nothing sent yet."""
    actors = await make_actors(api_key_factory)
    programme = await make_programme(
        client, actors, delivery_mechanism="voucher", provider="vouchers", voucher_validity_days=30
    )
    await fund(client, actors, programme["id"], "1000000.00")
    await seed_beneficiaries(session_factory, programme["id"], 3)
    batch = await approved_batch(client, actors, programme["id"])
    assert (await release(client, actors, batch["id"])).status_code == 200
    return actors, programme, batch, await entitlements_of(session_factory, batch["id"])
