"""Embedded PostgreSQL 16 from the `pgserver` wheel, for machines with no database server installed."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path


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
