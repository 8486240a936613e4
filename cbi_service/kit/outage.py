"""Telling a database outage from a bug, and logging an outage without a flood.

While PostgreSQL is down or restarting, every request and every worker poll fails the same way; each
failure is the server's state, not a fault of the code, so it is answered 503 and logged as one line
(no traceback), at most once per `interval` seconds per kind of failure, with the count of those held back.
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

log = structlog.get_logger(__name__)

# 08xxx: connection exceptions; 57P01-57P03: admin shutdown, crash shutdown, cannot connect now (starting
# up or shutting down). 53300 (too many connections) also passes once connections are released.
UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
_DRIVER_MODULES = ("asyncpg", "sqlalchemy")
RETRY_AFTER_SECONDS = 5


def _raised_by_driver(exc: BaseException) -> bool:
    """An OSError (refused, reset, timed out, socket gone) counts only when the database driver raised it:
    the same error from a file or a provider's HTTP call is no database outage."""
    return any(
        str(frame.f_globals.get("__name__", "")).startswith(_DRIVER_MODULES)
        for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


def unavailable_kind(exc: BaseException) -> str | None:
    """The name of the failure if `exc` means the database cannot be reached right now, else None.

    The chain of causes is followed: SQLAlchemy wraps the driver's error, and the driver wraps the socket's.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PoolTimeoutError):
            return "PoolTimeout"
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return type(current.orig).__name__
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and (sqlstate.startswith("08") or sqlstate in UNAVAILABLE_SQLSTATES):
            return type(current).__name__
        if isinstance(current, OSError) and _raised_by_driver(current):
            return type(current).__name__
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
    return None


class OutageLog:
    """One warning line per kind of failure per `interval` seconds, counting the ones held back."""

    def __init__(self, event: str, interval: float = 10.0) -> None:
        self.event = event
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def failure(self, kind: str, **fields: Any) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return
            self._last[kind] = now
            suppressed = self._suppressed.pop(kind, 0)
        log.warning(self.event, error_type=kind, suppressed=suppressed, **fields)
