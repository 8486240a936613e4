"""structlog set-up: JSON in production, console in development, request ids bound, PII scrubbed, secrets
redacted."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from cbi_service.kit.redaction import REDACTED, redact

PII_KEYS = frozenset(
    {
        "given_names",
        "family_names",
        "name",
        "full_name",
        "first_name",
        "last_name",
        "date_of_birth",
        "dob",
        "birth_date",
        "documents",
        "document",
        "document_number",
        "number",
        "phone",
        "phone_number",
        "email",
        "address",
        "card_number",
        "pan",
        "card_token",
        "voucher_code",
        "authorization",
        "api_key",
        "secret",
        "password",
        "consent",
        "location",
    }
)


def redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Hide every secret, at any depth and in any text (an exception's included): the value of a field named
    like one (`webhook_secret`, `authorization`, `master_key`, …) and whatever looks like one (`whsec_…`,
    `Bearer …`, an API key, a URL's password). Runs after exceptions are rendered, so their text is covered."""
    redacted: MutableMapping[str, Any] = redact(event_dict, by_name=True)
    return redacted


def _scrub(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: REDACTED if str(k).lower() in PII_KEYS else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def scrub_pii(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Replace every PII field, at any depth, before an event is rendered."""
    return {k: REDACTED if k.lower() in PII_KEYS else _scrub(v) for k, v in event_dict.items()}


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record is emitted: test runners and tools swap the stream,
    and a handler bound to a closed one would fail on the last records written at interpreter exit."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        """The stream is always the current `sys.stderr`; assignments by the base class are ignored."""


def stderr_in_colour() -> bool:
    """Colour only for a person at a terminal: never into a file, a pipe or a log collector, and never under
    NO_COLOR (https://no-color.org); FORCE_COLOR asks for it anyway."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def configure_logging(log_format: str, level: str = "INFO") -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        scrub_pii,
    ]
    # Exceptions become text (or dicts of text) here rather than in the renderer, so that their secrets are
    # redacted like the rest of the event.
    if log_format == "json":
        renderer: Any = structlog.processors.JSONRenderer()
        shared.append(
            structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
        )
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=stderr_in_colour(), exception_formatter=structlog.dev.plain_traceback
        )
        shared.append(structlog.processors.format_exc_info)
    shared.append(redact_secrets)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = _StderrHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
