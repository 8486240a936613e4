"""Connections of the embedded DuckDB a sweep computes in (never the service's database)."""

from __future__ import annotations

from typing import Any


def duckdb_connection(**config: Any) -> Any:
    """A new in-memory DuckDB with `config`, without the progress bar DuckDB draws on stderr for long
    queries (it would garble the command's own progress). The option can only be set per connection, in SQL."""
    import duckdb

    connection = duckdb.connect(config=config)
    connection.execute("SET enable_progress_bar = false")
    return connection
