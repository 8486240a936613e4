"""The ledger's schema: SQLAlchemy Core descriptions of its tables, used for reads, and the SQL that creates
them and its functions, which migrations run.

The SQL lives in `ledger/sql/`, shipped with the package. Tables, guards and any function whose rules a
migration changes are one file per object group and per revision that defines it (`0002_account_counters.sql`,
then `0007_account_counters.sql`): such a file, once released, never changes, so that every migration, upgrade
or downgrade, runs what it ran when it was written. A function rewritten with the same rules (faster plans)
keeps one definition, one unversioned file (`post_one.sql`) that every migration installing it runs.
Statements in a file end with `;` at the end of a line; function bodies are
quoted with `$$`.
"""

from __future__ import annotations

from importlib.resources import files

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB

SCHEMA = "ledger"

metadata = MetaData(schema=SCHEMA)

accounts = Table(
    "accounts",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("code", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("flags", Integer, nullable=False),
    Column("metadata", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("posted", BigInteger, nullable=False),
    Column("pending_debits", BigInteger, nullable=False),
    Column("pending_credits", BigInteger, nullable=False),
    Column("entry_seq", BigInteger, nullable=False),
    Column("last_posted_at", DateTime(timezone=True), nullable=False),
)

transactions = Table(
    "transactions",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("key", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("phase", Text, nullable=False),
    Column("pending_id", Uuid),
    Column("reverses_id", Uuid),
    Column("currency", Text, nullable=False),
    Column("refs", JSONB, nullable=False),
    Column("description", Text, nullable=False),
    Column("posted_at", DateTime(timezone=True), nullable=False),
    Column("chain", SmallInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("prev_hash", LargeBinary, nullable=False),
    Column("hash", LargeBinary, nullable=False),
)

entries = Table(
    "entries",
    metadata,
    Column("tx_id", Uuid, primary_key=True),
    Column("idx", SmallInteger, primary_key=True),
    Column("account_id", Uuid, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("posted", Boolean, nullable=False),
    Column("posted_at", DateTime(timezone=True), nullable=False),
    Column("account_seq", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
)

chains = Table(
    "chains",
    metadata,
    Column("chain", SmallInteger, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("head_hash", LargeBinary, nullable=False),
    Column("last_posted_at", DateTime(timezone=True), nullable=False),
)


def sql_text(name: str) -> str:
    """The text of `ledger/sql/<name>`."""
    return files("ledger").joinpath("sql", name).read_text(encoding="utf-8")


def sql_statements(name: str) -> list[str]:
    """The statements of `ledger/sql/<name>`, one by one (a prepared statement holds only one)."""
    return split_statements(sql_text(name))


def split_statements(sql: str) -> list[str]:
    """A statement ends at a line ending with `;` outside a `$$` quote; comment lines outside quotes stay
    with the statement that follows them, and a trailing comment alone is left out."""
    statements: list[str] = []
    lines: list[str] = []
    quoted = False
    for line in sql.splitlines(keepends=True):
        lines.append(line)
        if not quoted and line.lstrip().startswith("--"):
            continue
        if line.count("$$") % 2:
            quoted = not quoted
        if not quoted and line.rstrip().endswith(";"):
            statements.append("".join(lines))
            lines = []
    if quoted or any(line.strip() and not line.lstrip().startswith("--") for line in lines):
        raise ValueError("the SQL ends inside a statement")
    return statements
