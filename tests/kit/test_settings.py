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
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    for secret in (*SECRETS, "kk1", "db-password"):
        assert secret not in shown


def test_production_refuses_an_empty_secret():
    with pytest.raises(ValidationError, match="webhook_secret"):
        Settings(env="production", providers={"cards": {"adapter": "prepaid_card", "webhook_secret": ""}})
    with pytest.raises(ValidationError, match="needs a key"):
        Settings(env="production", registries={"partner": {"adapter": "hashed_list", "key": ""}})


def test_production_verifies_a_g2p_connect_provider_by_its_public_key_instead_of_a_secret():
    keys = {name: SecretStr("k") for name in ("voucher_signing_key", "master_key", "ledger_signing_key")}
    g2p = {"adapter": "g2p_connect", "base_url": "https://g2p.example", "provider_public_key": "pk"}

    assert "g2p" in Settings(env="production", providers={"g2p": g2p}, **keys).providers
    with pytest.raises(ValidationError, match="provider_public_key"):
        Settings(env="production", providers={"g2p": {**g2p, "provider_public_key": ""}}, **keys)


DATABASE_PASSWORD = "db-pa55word"
SECRET_VALUES = (
    "whsec_bmV3IHNlY3JldCBvZiB0aGUgd2ViaG9vaw==",
    "whsec_b2xkIHNlY3JldA==",
    "sk_live_456",
    "oauth-client-secret",
    "header-token-789",
    "registry-key-1",
    "voucher-seed-2",
    "master-key-3",
    DATABASE_PASSWORD,
    "query-password-4",
)


@pytest.fixture
def secret_environment(monkeypatch, tmp_path):
    new, old, api_key, client_secret, header_token, registry_key, voucher_key, master_key, _, query_password = (
        SECRET_VALUES
    )
    providers = {
        "cards": {"adapter": "prepaid_card", "base_url": "http://p", "webhook_secret": [new, old], "api_key": api_key},
        "wallet": {
            "adapter": "mobile_money",
            "oauth": {"client_id": "cbi", "client_secret": client_secret},
            "headers": [{"Authorization": f"Bearer {header_token}"}],
        },
    }
    monkeypatch.setenv("CBI_PROVIDERS", json.dumps(providers))
    monkeypatch.setenv("CBI_REGISTRIES", json.dumps({"partner": {"adapter": "hashed_list", "key": registry_key}}))
    monkeypatch.setenv("CBI_VOUCHER_SIGNING_KEY", voucher_key)
    monkeypatch.setenv("CBI_MASTER_KEY", master_key)
    monkeypatch.setenv("CBI_MASTER_KEY_FILE", str(tmp_path / "master.key"))
    monkeypatch.setenv("DATABASE_URL", f"postgresql://cbi:{DATABASE_PASSWORD}@db:5432/cbi?sslpassword={query_password}")


def test_settings_printed_or_dumped_show_no_secret(secret_environment):
    settings = Settings()

    shown = "\n".join(
        (
            repr(settings),
            str(settings),
            str(settings.model_dump()),
            settings.model_dump_json(),
            repr(settings.providers),
            repr(settings.database_url),
        )
    )
    for secret in SECRET_VALUES:
        assert secret not in shown
    assert "DatabaseUrl('postgresql://cbi:***@db:5432/cbi')" in repr(settings), "all but its secrets"
    assert "'client_secret': SecretStr('**********')" in repr(settings.providers)
    assert "'client_id': 'cbi'" in repr(settings.providers), "options that are no secret stay readable"


def test_secrets_are_held_as_secret_types_at_any_depth_and_still_read(secret_environment, tmp_path):
    settings = Settings()

    wallet = settings.providers["wallet"]
    assert wallet["oauth"]["client_secret"] == SecretStr("oauth-client-secret")
    assert wallet["headers"][0]["Authorization"] == SecretStr("Bearer header-token-789")
    assert settings.master_key == SecretStr("master-key-3")
    assert settings.master_key_file == tmp_path / "master.key"
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value().startswith(f"postgresql://cbi:{DATABASE_PASSWORD}@db:5432/")
    assert settings.async_database_url is not None
    assert DATABASE_PASSWORD in settings.async_database_url, "the engine still gets the password"


def test_a_refused_setting_never_echoes_its_value(secret_environment, monkeypatch):
    monkeypatch.setenv("CBI_ENV", "production")
    monkeypatch.setenv("CBI_PROVIDERS", json.dumps({"cards": {"adapter": "prepaid_card", "api_key": "sk_live_456"}}))
    with pytest.raises(ValidationError) as refused_by_rule:
        Settings()
    monkeypatch.setenv("CBI_PROVIDERS", json.dumps({"cards": "whsec_bmV3IHNlY3JldCBvZiB0aGUgd2ViaG9vaw=="}))
    with pytest.raises(ValidationError) as refused_by_type:
        Settings()

    messages = f"{refused_by_rule.value}\n{refused_by_type.value}"
    assert "needs a webhook_secret" in messages
    assert "providers.cards" in messages
    for secret in SECRET_VALUES:
        assert secret not in messages


@pytest.mark.parametrize("url", ["postgresql://cbi:db-pa55word@db:port/cbi", "db-pa55word"])
def test_a_database_url_that_cannot_be_read_shows_nothing_of_itself(url):
    assert "db-pa55word" not in repr(Settings(database_url=url))


def test_an_unknown_registry_adapter_is_refused_when_settings_are_read(monkeypatch):
    monkeypatch.setenv("CBI_REGISTRIES", '{"partner": {"adapter": "dcii"}}')
    with pytest.raises(ValidationError, match="unknown registry adapter 'dcii'; available: dci, hashed_list"):
        Settings()
    monkeypatch.setenv("CBI_REGISTRIES", '{"partner": {"adapter": "dci", "base_url": "http://registry.example.org"}}')
    assert Settings().registries["partner"]["adapter"] == "dci"
