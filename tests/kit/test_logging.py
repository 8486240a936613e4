"""PII never reaches the logs; request ids do."""

from __future__ import annotations

import io
import json
import logging
import sys

import pytest
import structlog

from cbi_service.kit.logging import REDACTED, configure_logging, scrub_pii

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
