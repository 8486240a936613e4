from __future__ import annotations

import json

import pytest
from pydantic import SecretStr, ValidationError

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


SECRETS = ("whsec_bmV3IHNlY3JldCBvZiB0aGUgd2ViaG9vaw==", "whsec_b2xkIHNlY3JldA==", "sk_live_123", "tok_1", "pw_1")


def test_secret_options_are_secret_types_shown_nowhere(monkeypatch):
    new, old, api_key, token, password = SECRETS
    monkeypatch.setenv(
        "CBI_PROVIDERS",
        json.dumps(
            {
                "cards": {
                    "adapter": "prepaid_card",
                    "base_url": "http://p",
                    "webhook_secret": [new, old],
                    "api_key": api_key,
                },
                "wallet": {
                    "adapter": "mobile_money",
                    "signing_token": token,
                    "client_password": password,
                    "retries": 3,
                },
            }
        ),
    )
    monkeypatch.setenv(
        "CBI_REGISTRIES", json.dumps({"partner": {"adapter": "hashed_list", "path": "/p.csv", "key": "kk1"}})
    )
    monkeypatch.setenv("DATABASE_URL", "postgresql://cbi:db-password@db/cbi")

    settings = Settings()

    cards, wallet, partner = settings.providers["cards"], settings.providers["wallet"], settings.registries["partner"]
    assert [s.get_secret_value() for s in cards["webhook_secret"]] == [new, old]
    assert cards["api_key"] == SecretStr(api_key)
    assert (wallet["signing_token"], wallet["client_password"]) == (SecretStr(token), SecretStr(password))
    assert partner["key"] == SecretStr("kk1")
    assert (cards["base_url"], wallet["retries"], partner["path"]) == ("http://p", 3, "/p.csv")
    shown = repr(settings) + str(settings) + settings.model_dump_json(exclude={"database_url"})
    for secret in (*SECRETS, "kk1", "db-password"):
        assert secret not in shown


def test_production_refuses_an_empty_secret():
    with pytest.raises(ValidationError, match="webhook_secret"):
        Settings(env="production", providers={"cards": {"adapter": "prepaid_card", "webhook_secret": ""}})
    with pytest.raises(ValidationError, match="needs a key"):
        Settings(env="production", registries={"partner": {"adapter": "hashed_list", "key": ""}})
