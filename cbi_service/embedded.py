"""Embedded PostgreSQL 16 from the `pgserver` wheel, for machines with no database server installed."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path


class EmbeddedNotRunning(RuntimeError):
    """No embedded server is running in the data folder, and the caller must not start one."""


@contextlib.contextmanager
def embedded_postgres(data_dir: Path, *, cleanup_mode: str | None = "stop") -> Iterator[str]:
    """Start (or join) the server whose data lives in `data_dir/pgdata`; yield its URL; stop it on exit."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir.resolve() / "pgdata", cleanup_mode=cleanup_mode)
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


@contextlib.contextmanager
def running_embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Join the server another process (`serve`) runs in `data_dir/pgdata`; never start one.

    A server started here would be a fresh, unmigrated database that nothing else uses. Joined, it stays
    up until its last user (this one or `serve`) exits.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.utils import PostmasterInfo

    pgdata = data_dir.resolve() / "pgdata"
    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (AssertionError, ValueError, OSError):  # a pid file still being written by a starting server
        info = None
    if info is None or not info.is_running() or info.status != "ready":
        raise EmbeddedNotRunning(
            f"no embedded database is running in {data_dir}: start `cbi-service serve` with the same "
            "CBI_DATA_DIR first, or set DATABASE_URL"
        )
    with embedded_postgres(data_dir) as url:
        yield url
