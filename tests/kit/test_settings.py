from __future__ import annotations

import pytest
from pydantic import ValidationError

from cbi_service.kit.settings import Settings, to_asyncpg_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://postgres@127.0.0.1:5432/test", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"),
        ("postgres://u:p@db/cbi", "postgresql+asyncpg://u:p@db/cbi"),
        ("postgresql+asyncpg://u@db/cbi", "postgresql+asyncpg://u@db/cbi"),
        ("postgresql://postgres:@/postgres?host=/tmp/pg", "postgresql+asyncpg://postgres:@/postgres?host=%2Ftmp%2Fpg"),
        ("postgresql://u@db/cbi?sslmode=require", "postgresql+asyncpg://u@db/cbi?ssl=require"),
    ],
)
def test_database_url_forms(url, expected):
    assert to_asyncpg_url(url) == expected


def test_unsupported_scheme_is_refused():
    with pytest.raises(ValueError, match="scheme"):
        to_asyncpg_url("mysql://db/cbi")


def test_production_refuses_providers_without_secrets():
    providers = {"cards": {"adapter": "prepaid_card", "base_url": "https://p.example"}}
    with pytest.raises(ValidationError, match="webhook_secret"):
        Settings(env="production", providers=providers)
    assert Settings(env="development", providers=providers).providers == providers


def test_providers_and_registries_parse_from_json_env(monkeypatch):
    monkeypatch.setenv("CBI_PROVIDERS", '{"cards": {"adapter": "prepaid_card", "webhook_secret": "whsec_x"}}')
    monkeypatch.setenv("CBI_REGISTRIES", "")
    settings = Settings()
    assert settings.providers["cards"]["adapter"] == "prepaid_card"
    assert settings.registries == {}
