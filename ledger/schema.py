"""SQLAlchemy Core descriptions of the ledger tables (created by migration 0002_ledger), used for reads."""

from __future__ import annotations

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
