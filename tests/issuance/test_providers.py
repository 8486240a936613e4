"""`GET /v1/providers` and the built-in providers every deployment has whatever CBI_PROVIDERS says."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from adapters.providers.base import ProviderConfigError
from cbi_service.app import create_app
from cbi_service.issuance import providers
from tests.conftest import TEST_WEBHOOK_SECRET
from tests.support import assert_problem, make_programme, programme_body

BUILT_IN = MappingProxyType(
    {"agency-vouchers": MappingProxyType({"adapter": "voucher", "base_url": "http://127.0.0.1:9"})}
)


async def test_providers_are_listed_with_their_mechanisms_and_nothing_of_their_configuration(
    client, api_key_factory, simulator
):
    response = await client.get("/v1/providers", headers=await api_key_factory("auditor"))

    assert response.status_code == 200, response.text
    assert response.json() == {
        "items": [
            {"name": "cards", "adapter": "prepaid_card", "delivery_mechanisms": ["prepaid_card"]},
            {"name": "vouchers", "adapter": "voucher", "delivery_mechanisms": ["voucher"]},
        ]
    }
    for configured in (TEST_WEBHOOK_SECRET, simulator.base_url.removeprefix("http://"), "chunk_size"):
        assert configured not in response.text


async def test_a_built_in_provider_is_listed_and_named_by_programmes(monkeypatch, client, api_key_factory, settings):
    monkeypatch.setattr(providers, "BUILTIN_PROVIDERS", BUILT_IN)
    admin = await api_key_factory("admin")

    listed = (await client.get("/v1/providers", headers=admin)).json()["items"]
    programme = await make_programme(client, admin, provider="agency-vouchers", delivery_mechanism="voucher")

    assert {"name": "agency-vouchers", "adapter": "voucher", "delivery_mechanisms": ["voucher"]} in listed
    assert programme["provider"] == "agency-vouchers"
    assert "agency-vouchers" not in settings.providers, "built in, not configured"


async def test_a_programme_may_not_pair_a_provider_with_a_mechanism_it_does_not_deliver(client, api_key_factory):
    body = {"provider": "cards", "delivery_mechanism": "voucher"}
    response = await client.post(
        "/v1/programmes", json=programme_body(**body), headers=await api_key_factory("programme_officer")
    )

    problem = assert_problem(response, 422)
    assert problem["errors"] == [{"field": "delivery_mechanism", "message": "provider 'cards' delivers prepaid_card"}]


def test_a_configured_provider_may_not_take_a_built_in_name(monkeypatch, settings):
    monkeypatch.setattr(providers, "BUILTIN_PROVIDERS", BUILT_IN)
    taken = {**settings.providers, "agency-vouchers": settings.providers["vouchers"]}

    with pytest.raises(ProviderConfigError, match="'agency-vouchers' is built in"):
        create_app(settings.model_copy(update={"providers": taken}))
