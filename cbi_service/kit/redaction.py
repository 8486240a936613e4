"""What a secret looks like, by its name or its shape, so that logs and error bodies can hide one they were
handed by mistake (an exception's text, a header, a configuration dumped whole)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[redacted]"

_SECRET_WORDS = ("secret", "password", "passwd", "token", "authorization", "cookie", "credential")
_NAMED_IN_TEXT = r"(?:password|passwd|secret|token|api[_-]?key|authorization)[\w-]{0,32}"
# Bounded repetitions throughout: these run over every string logged, whatever its length.
_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    # A secret-named field written into text (`password=x`, `'api_key': 'x'`, `Authorization: Bearer x`);
    # a SecretStr's own rendering is left as it is.
    (
        re.compile(
            rf"(?i)({_NAMED_IN_TEXT}[\"']?\s{{0,8}}[:=]\s{{0,8}})(?!Secret(?:Str|Bytes)\(|'\*+'|\"\*+\")"
            r"(?:\"[^\"]*\"|'[^']*'|(?:(?:bearer|basic)\s{1,8})?[^\s\"',;&(){}\[\]]+)"
        ),
        rf"\1{REDACTED}",
    ),
    # Standard Webhooks signing secrets.
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=_-]+"), REDACTED),
    # A bearer token: one with a digit or punctuation in it, so the word in a sentence stays.
    (re.compile(r"(?i)\b(bearer)\s{1,8}(?=[\w.~+/=-]*[\d_~+/=-])[\w.~+/=-]+"), rf"\1 {REDACTED}"),
    # The service's own API keys (`cbi_` and the 43 characters of 32 random bytes in base64url, see `auth`).
    (re.compile(r"\bcbi_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])"), REDACTED),
    # A password in a URL's user info, masked as SQLAlchemy masks it: `postgresql://cbi:***@db/cbi`.
    (re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s:/@]{0,256}):[^\s/@]{1,256}@"), r"\1:***@"),
)


def is_secret_name(name: str) -> bool:
    """A name (an adapter option, a log field, a header) that holds a secret: `key`, `*_key` (`api_key`,
    `master_key`, `X-Api-Key`), or one naming a secret, password, token, authorization, cookie or credential."""
    name = name.lower().replace("-", "_")
    return name == "key" or name.endswith("_key") or any(word in name for word in _SECRET_WORDS)


def redact_text(text: str) -> str:
    """`text` with every secret-shaped part hidden; `text` itself when it holds none."""
    redacted = text
    for pattern, replacement in _SHAPES:
        redacted = pattern.sub(replacement, redacted)
    return text if redacted == text else redacted


def redact(value: Any, *, by_name: bool) -> Any:
    """`value` with its secret-shaped strings hidden at any depth (an exception as its redacted repr); with
    `by_name`, also whatever a mapping holds under a secret's name. Other objects are left as they are: their
    repr is theirs to keep secrets out of, as SecretStr does."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            k: REDACTED if by_name and v is not None and is_secret_name(str(k)) else redact(v, by_name=by_name)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(item, by_name=by_name) for item in value]
    if isinstance(value, BaseException):
        return redact_text(repr(value))
    return value
