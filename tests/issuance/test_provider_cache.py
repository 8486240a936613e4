"""One adapter per configured provider and event loop, built again when its entry changes."""

from __future__ import annotations

from cbi_service.issuance.providers import close_providers, get_provider
from cbi_service.kit.settings import Settings


def _settings(api_key: str) -> Settings:
    return Settings(
        providers={"cards": {"adapter": "prepaid_card", "base_url": "http://127.0.0.1:9", "api_key": api_key}}
    )


async def test_an_entry_whose_secret_changed_is_a_new_adapter():
    """Secrets are hidden in the settings; the cache still tells two keys apart."""
    first, rotated = _settings("key-one"), _settings("key-two")
    try:
        adapter = get_provider(first, "cards")
        assert get_provider(first, "cards") is adapter
        assert get_provider(rotated, "cards") is not adapter
    finally:
        await close_providers()
