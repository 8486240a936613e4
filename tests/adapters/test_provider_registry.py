"""Choosing adapters from CBI_PROVIDERS entries, including adapters installed by other packages."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from adapters.providers import (
    IssueInstruction,
    ProviderConfigError,
    available_adapters,
    build_provider,
    build_providers,
)
from adapters.providers.prepaid_card import PrepaidCardAdapter
from adapters.providers.voucher import VoucherAdapter
from adapters.simulator import SimulatorAdmin
from tests.adapters.support import ProviderConfig

PLUGIN_MODULE = "acme_cbi_wallets"

PLUGIN_SOURCE = '''
from adapters.providers.prepaid_card import PrepaidCardAdapter


class MobileMoneyAdapter(PrepaidCardAdapter):
    """A wallet provider that happens to speak the same HTTP API."""


def build(name, config):
    return MobileMoneyAdapter.from_config(name, config)


def build_nothing(name, config):
    return object()
'''


def install_distribution(site: Path, name: str, entry_points: str) -> None:
    """What `pip install` leaves behind: a dist-info folder whose entry_points.txt importlib reads."""
    dist_info = site / f"{name}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / f"{PLUGIN_MODULE}.py").write_text(PLUGIN_SOURCE)
    install_distribution(
        tmp_path,
        "acme_cbi_wallets",
        f"""
        [cbi_service.providers]
        mobile_money = {PLUGIN_MODULE}:build
        not_an_adapter = {PLUGIN_MODULE}:build_nothing
        broken = acme_cbi_missing_module:build
        prepaid_card = {PLUGIN_MODULE}:build
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop(PLUGIN_MODULE, None)


async def test_builtin_adapters_from_config() -> None:
    providers = build_providers(
        {
            "acme_cards": {"adapter": "prepaid_card", "base_url": "http://127.0.0.1:1/", "webhook_secret": "x"},
            "acme_vouchers": {"adapter": "voucher", "base_url": "https://vouchers.example", "chunk_size": 250},
        }
    )
    try:
        cards, vouchers = providers["acme_cards"], providers["acme_vouchers"]
        assert type(cards) is PrepaidCardAdapter
        assert (cards.name, cards.delivery_mechanism, cards.chunk_size) == ("acme_cards", "prepaid_card", 500)
        assert type(vouchers) is VoucherAdapter
        assert (vouchers.name, vouchers.delivery_mechanism, vouchers.chunk_size) == ("acme_vouchers", "voucher", 250)
    finally:
        for provider in providers.values():
            await provider.aclose()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"adapter": "western_telegraph", "base_url": "http://x"}, "unknown provider adapter 'western_telegraph'"),
        ({"base_url": "http://x"}, "'adapter' must name"),
        ({"adapter": 7}, "'adapter' must name"),
        ({"adapter": "voucher"}, "base_url"),
        ({"adapter": "voucher", "base_url": "ftp://x"}, "absolute http(s) URL"),
        ({"adapter": "voucher", "base_url": "http://x", "chunk_size": 0}, "chunk_size"),
        ({"adapter": "voucher", "base_url": "http://x", "chunk_size": 5000}, "chunk_size"),
        ({"adapter": "prepaid_card", "base_url": "http://x", "timeout_seconds": 0}, "timeout_seconds"),
    ],
)
def test_misconfigurations_are_config_errors(config: dict[str, object], message: str) -> None:
    with pytest.raises(ProviderConfigError) as raised:
        build_provider("p", config)
    assert message in str(raised.value)


def test_config_errors_never_echo_secrets() -> None:
    with pytest.raises(ProviderConfigError) as raised:
        build_provider("p", {"adapter": "voucher", "base_url": "http://x", "api_key": ["sk_live_123"]})
    assert "api_key" in str(raised.value)
    assert "sk_live_123" not in str(raised.value)


def test_unknown_adapter_lists_what_is_available() -> None:
    with pytest.raises(ProviderConfigError) as raised:
        build_provider("p", {"adapter": "nope", "base_url": "http://x"})
    assert "available: g2p_connect, prepaid_card, voucher" in str(raised.value)


async def test_third_party_adapter_is_loaded_from_its_entry_point(
    plugin_site: Path, provider_config: ProviderConfig, admin: SimulatorAdmin
) -> None:
    assert {"mobile_money", "prepaid_card", "voucher"} <= set(available_adapters())

    wallet = build_provider("acme_wallets", provider_config("mobile_money"))
    try:
        (outcome,) = await wallet.issue([IssueInstruction(uuid4(), "ben_1", 25_000_00, "COP", "prog_transport", None)])
    finally:
        await wallet.aclose()

    assert type(wallet).__name__ == "MobileMoneyAdapter"
    assert wallet.name == "acme_wallets"
    assert outcome.accepted
    assert (await admin.drained())["card_loads"] == 1


def test_broken_third_party_adapters_fail_at_startup_with_a_reason(plugin_site: Path) -> None:
    with pytest.raises(ProviderConfigError, match="not a ProviderAdapter"):
        build_provider("p", {"adapter": "not_an_adapter"})
    with pytest.raises(ProviderConfigError, match="failed to load"):
        build_provider("p", {"adapter": "broken"})


async def test_an_installed_package_cannot_replace_a_builtin(plugin_site: Path) -> None:
    provider = build_provider("p", {"adapter": "prepaid_card", "base_url": "http://127.0.0.1:1"})
    await provider.aclose()
    assert type(provider) is PrepaidCardAdapter


def test_an_adapter_name_claimed_by_two_packages_is_refused(plugin_site: Path) -> None:
    install_distribution(
        plugin_site,
        "other_wallets",
        f"""
        [cbi_service.providers]
        mobile_money = {PLUGIN_MODULE}:build_nothing
        """,
    )
    with pytest.raises(ProviderConfigError, match="declared by several packages"):
        build_provider("p", {"adapter": "mobile_money", "base_url": "http://x"})
