"""PII and secrets never reach the logs; request ids do."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest
import structlog

from cbi_service.kit.logging import REDACTED, configure_logging, scrub_pii
from cbi_service.kit.settings import hidden_secrets

PERSON = {
    "given_names": "María José",
    "family_names": "Pérez de la Cruz",
    "date_of_birth": "1990-02-14",
    "phone": "+573001234567",
    "documents": [{"type": "national_id", "number": "V-12.345.678"}],
}


def test_processor_scrubs_pii_at_any_depth():
    event = scrub_pii(None, "info", {"event": "registered", "beneficiary": PERSON, "rows": [PERSON], **PERSON})
    rendered = json.dumps(event)
    for value in ("María", "Pérez", "1990-02-14", "+573001234567", "12.345.678"):
        assert value not in rendered
    assert event["given_names"] == REDACTED
    assert event["beneficiary"]["documents"] == REDACTED
    assert event["event"] == "registered"


def test_json_logs_of_a_request_carry_no_pii(capsys):
    configure_logging("json")
    try:
        structlog.contextvars.bind_contextvars(request_id="req-1")
        structlog.get_logger("test").info("beneficiary_registered", **PERSON, extra={"phone": "+573001234567"})
        logging.getLogger("stdlib").warning("stdlib event", extra={"family_names": "Pérez"})
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    finally:
        structlog.contextvars.clear_contextvars()
    assert lines[0]["event"] == "beneficiary_registered"
    assert lines[0]["request_id"] == "req-1"
    text = json.dumps(lines)
    for value in ("María", "Pérez", "1990-02-14", "+573001234567", "12.345.678"):
        assert value not in text


async def test_requests_with_pii_bodies_log_no_pii(client, api_key_factory, capsys):
    configure_logging("json")
    headers = await api_key_factory("admin")
    body = {"name": "x", "given_names": "María José", "phone": "+573001234567"}
    await client.post("/v1/programmes", json=body, headers=headers)
    err = capsys.readouterr().err
    assert "María" not in err
    assert "+573001234567" not in err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "env", "coloured"),
    [
        (io.StringIO, {}, False),
        (_Terminal, {}, True),
        (_Terminal, {"NO_COLOR": "1"}, False),
        (io.StringIO, {"FORCE_COLOR": "1"}, True),
    ],
)
def test_console_logs_are_coloured_only_for_a_terminal(monkeypatch, stream, env, coloured):
    for name in ("NO_COLOR", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = stream()
    monkeypatch.setattr(sys, "stderr", out)

    configure_logging("console")
    structlog.get_logger("test").warning("disk_nearly_full", free_mb=12)

    assert "disk_nearly_full" in out.getvalue()
    assert ("\x1b[" in out.getvalue()) is coloured


API_KEY = "cbi_" + "Zq9-_x" * 7 + "w"  # the shape `auth` hands out: cbi_ and 43 characters of base64url
WEBHOOK_SECRET = "whsec_c2VjcmV0IG9mIHRoZSB3ZWJob29rIHNpZ25lcg=="
OLD_WEBHOOK_SECRET = "whsec_b2xkIHNlY3JldCBiZWluZyByb3RhdGVk"
DATABASE_URL = "postgresql://cbi:db-pa55word@db.internal:5432/cbi"
PROVIDERS = {
    "cards": {
        "adapter": "prepaid_card",
        "base_url": "http://p",
        "webhook_secret": [WEBHOOK_SECRET, OLD_WEBHOOK_SECRET],
        "api_key": "sk_live_123",
    }
}
LOGGED_SECRETS = (API_KEY, WEBHOOK_SECRET, OLD_WEBHOOK_SECRET, "db-pa55word", "sk_live_123", "master-key-1")


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_secrets_are_redacted_from_logs_by_name_and_by_shape(capsys, log_format):
    configure_logging(log_format)
    log = structlog.get_logger("test")
    log.info(
        "provider_configured", config=PROVIDERS["cards"], hidden=hidden_secrets(PROVIDERS), master_key="master-key-1"
    )
    log.info("calling_provider", headers={"Authorization": f"Bearer {API_KEY}"}, database=DATABASE_URL)
    log.warning(f"webhook refused, secret {WEBHOOK_SECRET} tried, key {API_KEY} given")
    try:
        raise ConnectionError(f"cannot reach {DATABASE_URL} with Authorization: Bearer {API_KEY}")
    except ConnectionError:
        log.exception("provider_call_failed")
        logging.getLogger("stdlib").exception("stdlib saw %s", DATABASE_URL)
    log.info("voucher_printed", note="a bearer voucher, token of aid", key_id="k-2026", module="cbi_service.kit.errors")
    err = capsys.readouterr().err

    for secret in LOGGED_SECRETS:
        assert secret not in err
    assert "postgresql://cbi:***@db.internal:5432/cbi" in err, "a URL keeps all but its password"
    assert "provider_call_failed" in err
    assert "ConnectionError" in err, "the exception is still told"
    assert REDACTED in err
    for kept in ("a bearer voucher, token of aid", "k-2026", "cbi_service.kit.errors"):
        assert kept in err, "what only resembles a secret is logged as it is"
