"""Service configuration: one pydantic-settings class read from the environment and `.env`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from cbi_service.kit.bank_accounts import HOLDER_NAME, SettlementAccount
from cbi_service.kit.bounded import TextLimits
from cbi_service.kit.redaction import is_secret_name


class DatabaseUrl(SecretStr):
    """A database URL, held as a secret because it may carry the password: its repr and str keep the rest,
    as SQLAlchemy renders it (`postgresql://cbi:***@db/cbi`), without any secret query option (`sslpassword=`)."""

    def _display(self) -> str:
        from sqlalchemy.engine import make_url  # not at import: the CLI starts without SQLAlchemy
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(self.get_secret_value())
        except (ArgumentError, ValueError):  # not a URL SQLAlchemy reads (a bad port): nothing of it is shown
            return "**********"
        shown = url.difference_update_query([name for name in url.query if is_secret_name(name)])
        return shown.render_as_string(hide_password=True)


class Settings(BaseSettings):
    """Every knob of the service; `CBI_` prefix except `DATABASE_URL`, which tooling shares."""

    # Errors name the setting, never its value: a value may be a secret, or a JSON document holding one.
    model_config = SettingsConfigDict(env_prefix="CBI_", env_file=".env", extra="ignore", hide_input_in_errors=True)

    env: Literal["development", "production"] = "development"
    log_format: Literal["json", "console"] | None = None
    log_level: str = "INFO"
    database_url: DatabaseUrl | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "CBI_DATABASE_URL")
    )
    data_dir: Path = Path(".cbi")
    # A process's connections, all kept open: an overflow connection is closed as soon as it is given back, so
    # under load every burst past the pool would pay a new connection (its start-up, its statements prepared
    # again) per request; a request that finds none free waits for one instead.
    db_pool_size: int = Field(default=20, ge=1)
    db_max_overflow: int = Field(default=0, ge=0)
    # Adapter options by name; those holding secrets (`is_secret_name`, at any depth) are SecretStr, shown as
    # '**********'.
    providers: Annotated[dict[str, dict[str, Any]], NoDecode] = Field(default_factory=dict)
    registries: Annotated[dict[str, dict[str, Any]], NoDecode] = Field(default_factory=dict)
    idempotency_ttl_hours: int = Field(default=48, ge=24)
    run_worker: bool = True
    worker_poll_seconds: float = Field(default=0.5, gt=0)
    provider_status_poll_seconds: float = Field(default=300.0, gt=0)  # submitted this long, no event: ask
    # `cbi-service worker` serves Prometheus metrics here when a port is set (`--metrics-port` wins).
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    # Uploaded files (imports, statements): refused before they cost memory; see README "Uploaded files".
    import_max_rows: int = Field(default=200_000, ge=1)
    upload_max_cell_chars: int = Field(default=4_096, ge=64, le=131_072)
    upload_max_line_chars: int = Field(default=65_536, ge=1_024)
    xlsx_max_bytes: int = Field(default=1 << 30, ge=1 << 20)
    xlsx_max_part_bytes: int = Field(default=64 << 20, ge=1 << 20)
    # Request bodies past these are refused with 413 as they stream in (JSON, file uploads, webhooks).
    max_json_body_bytes: int = Field(default=1 << 20, ge=1024)
    max_upload_body_bytes: int = Field(default=64 << 20, ge=1024)
    max_webhook_body_bytes: int = Field(default=64 << 10, ge=1024)
    # An offline sync of up to 10,000 scanned vouchers (a token is under 0.5 KB).
    max_sync_body_bytes: int = Field(default=16 << 20, ge=1024)
    # Paper vouchers are signed with this Ed25519 key (PKCS#8 PEM, or the base64 of its 32-byte seed); in
    # development with none set, one is generated into `data_dir`. The public halves of keys used before a
    # rotation (PEM, or the base64url of the 32 raw bytes) keep the vouchers they signed verifiable.
    voucher_signing_key: SecretStr | None = None
    voucher_previous_keys: list[str] = Field(default_factory=list)
    # Personal data is sealed under keys this master key wraps (`kit.crypto`): the base64 of 32 random
    # bytes, or a file holding it; a KMS adapter ("module:factory") instead. Development without any
    # generates one into `data_dir`; production refuses to start without one.
    master_key: SecretStr | None = None
    master_key_file: Path | None = None
    kms_adapter: str | None = None
    # Personal data of people inactive this long is erased by a periodic job (§13); unset keeps it.
    personal_data_retention_days: int | None = Field(default=None, ge=1)
    # Ledger export manifests are signed with this Ed25519 key, a key of its own (same forms and rotation).
    ledger_signing_key: SecretStr | None = None
    ledger_previous_keys: list[str] = Field(default_factory=list)
    # The agency's bank account merchant settlements are paid from (JSON: name with iban and bic, or with
    # account_number and bank_code): the debtor of their pain.001 files. Unset, settlements cannot be released.
    settlement_account: SettlementAccount | None = None
    # The agency as its bank knows it: the initiating party of pain.001 files.
    agency_name: str = Field(default="cbi-service", min_length=1, max_length=140, pattern=HOLDER_NAME)

    @field_validator("providers", "registries", mode="before")
    @classmethod
    def _parse_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("providers", "registries")
    @classmethod
    def _hide_secrets(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return hidden_secrets(value)

    @field_validator("registries")
    @classmethod
    def _known_registry_adapters(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Every entry names an adapter that exists, so that any command refuses a mistyped one at start;
        the app also builds each entry (`check_adapters`), which checks its options."""
        from adapters.registries.registry import REGISTRY_ADAPTERS  # not at import: the CLI starts without httpx

        for name, config in value.items():
            REGISTRY_ADAPTERS.check(name, config)
        return value

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Settings:
        if self.env != "development":
            for name, provider in self.providers.items():
                # Standard Webhooks providers are verified with a shared secret, G2P Connect ones with the
                # provider's public key: one of the two, or no callback could ever be trusted.
                if not provider.get("webhook_secret") and not provider.get("provider_public_key"):
                    raise ValueError(
                        f"CBI_PROVIDERS: provider {name!r} needs a webhook_secret (or, for g2p_connect, a"
                        " provider_public_key) outside development"
                    )
            for name, registry in self.registries.items():
                if "key" in registry and not registry["key"]:
                    raise ValueError(f"CBI_REGISTRIES: registry {name!r} needs a key outside development")
            if self.voucher_signing_key is None or not self.voucher_signing_key.get_secret_value().strip():
                raise ValueError("set CBI_VOUCHER_SIGNING_KEY outside development: paper vouchers are signed with it")
            if self.master_key is None and self.master_key_file is None and not self.kms_adapter:
                raise ValueError(
                    "set CBI_MASTER_KEY or CBI_MASTER_KEY_FILE outside development: personal data is encrypted under it"
                )
            if self.ledger_signing_key is None or not self.ledger_signing_key.get_secret_value().strip():
                raise ValueError("set CBI_LEDGER_SIGNING_KEY outside development: export manifests are signed with it")
        return self

    @property
    def effective_log_format(self) -> Literal["json", "console"]:
        if self.log_format:
            return self.log_format
        return "json" if self.env == "production" else "console"

    @property
    def text_limits(self) -> TextLimits:
        return TextLimits(max_record_chars=self.upload_max_line_chars, max_field_chars=self.upload_max_cell_chars)

    @property
    def async_database_url(self) -> str | None:
        return to_asyncpg_url(self.database_url.get_secret_value()) if self.database_url else None


def hidden_secrets(options: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Adapter options by name with each secret option as SecretStr, as the settings hold them (also for
    providers configured after the settings were read, such as the first run's simulators)."""
    return {name: _hidden(entry) for name, entry in options.items()}


def _hidden(options: Mapping[str, Any]) -> dict[str, Any]:
    """Secret options (`webhook_secret`, `api_key`, a registry's `key`, and any option of an installed adapter
    named like them) as SecretStr, also inside nested options (`{"oauth": {"client_secret": ...}}`)."""
    return {name: _secret(value) if is_secret_name(str(name)) else _nested(value) for name, value in options.items()}


def _nested(value: Any) -> Any:
    if isinstance(value, Mapping):
        return _hidden(value)
    if isinstance(value, list):
        return [_nested(item) for item in value]
    return value


def _secret(value: Any) -> Any:
    """A string (or each string of a list: secrets being rotated) as SecretStr, the options of a mapping as
    `_hidden` holds them; anything else is left for the adapter to refuse with its own message."""
    if isinstance(value, str):
        return SecretStr(value)
    if isinstance(value, list):
        return [SecretStr(item) if isinstance(item, str) else _nested(item) for item in value]
    return _nested(value)


def to_asyncpg_url(url: str) -> str:
    """Accept `postgresql://`, `postgres://` or `postgresql+asyncpg://`, TCP or `?host=/socket/dir`."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgresql", "postgres", "postgresql+asyncpg", "postgresql+psycopg"}:
        raise ValueError(f"unsupported database URL scheme {parts.scheme!r}")
    # libpq's sslmode is asyncpg's ssl (same values); keeping the libpq spelling would crash at connect.
    query = [("ssl" if k == "sslmode" else k, v) for k, v in parse_qsl(parts.query)]
    return urlunsplit(("postgresql+asyncpg", parts.netloc, parts.path, urlencode(query), parts.fragment))


@lru_cache
def get_settings() -> Settings:
    return Settings()
