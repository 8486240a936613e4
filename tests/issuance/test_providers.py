"""`GET /v1/providers` and the built-in providers every deployment has whatever CBI_PROVIDERS says."""

from __future__ import annotations

import pytest

from adapters.providers.base import ProviderConfigError
from cbi_service.app import create_app
from tests.conftest import TEST_WEBHOOK_SECRET
from tests.support import assert_problem, make_programme, programme_body


async def test_providers_are_listed_with_their_mechanisms_and_nothing_of_their_configuration(
    client, api_key_factory, simulator
):
    response = await client.get("/v1/providers", headers=await api_key_factory("auditor"))

    assert response.status_code == 200, response.text
    assert response.json() == {
        "items": [
            {"name": "cards", "adapter": "prepaid_card", "delivery_mechanisms": ["prepaid_card"]},
            {"name": "paper_voucher", "adapter": "paper_voucher", "delivery_mechanisms": ["paper_voucher"]},
            {"name": "vouchers", "adapter": "voucher", "delivery_mechanisms": ["voucher"]},
        ]
    }
    for configured in (TEST_WEBHOOK_SECRET, simulator.base_url.removeprefix("http://"), "chunk_size"):
        assert configured not in response.text


async def test_a_built_in_provider_is_listed_and_named_by_programmes(client, api_key_factory, settings):
    admin = await api_key_factory("admin")

    listed = (await client.get("/v1/providers", headers=admin)).json()["items"]
    programme = await make_programme(
        client, admin, provider="paper_voucher", delivery_mechanism="paper_voucher", voucher_validity_days=30
    )

    assert {"name": "paper_voucher", "adapter": "paper_voucher", "delivery_mechanisms": ["paper_voucher"]} in listed
    assert programme["provider"] == "paper_voucher"
    assert "paper_voucher" not in settings.providers, "built in, not configured"


async def test_a_programme_may_not_pair_a_provider_with_a_mechanism_it_does_not_deliver(client, api_key_factory):
    body = {"provider": "cards", "delivery_mechanism": "voucher"}
    response = await client.post(
        "/v1/programmes", json=programme_body(**body), headers=await api_key_factory("programme_officer")
    )

    problem = assert_problem(response, 422)
    assert problem["errors"] == [{"field": "delivery_mechanism", "message": "provider 'cards' delivers prepaid_card"}]


def test_a_configured_provider_may_not_take_a_built_in_name(settings):
    taken = {**settings.providers, "paper_voucher": settings.providers["vouchers"]}

    with pytest.raises(ProviderConfigError, match="'paper_voucher' is built in"):
        create_app(settings.model_copy(update={"providers": taken}))
