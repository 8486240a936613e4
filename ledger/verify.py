"""Offline verification of a ledger export: no database, only the rows and `ledger.chain`.

An export holds one row per entry (columns `EXPORT_COLUMNS`; extra columns are ignored), the rows of one
transaction next to each other, and the transactions of each chain stripe in increasing `seq` (stripes may
interleave, e.g. when ordered by time). The verifier recomputes every transaction's hash, checks that each
transaction sums to zero per currency and that each stripe links up (`prev_hash` = previous `hash`,
`seq` + 1). A partial export (a time window) is accepted: the first transaction seen of each stripe is
trusted for its `prev_hash`. An export filtered to a subset of accounts leaves holes in the stripes; pass
`allow_gaps=True` to check the hashes and links that are present and accept missing sequence numbers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ledger.chain import GENESIS_HASH, canonical_bytes, compute_hash, format_timestamp

EXPORT_COLUMNS: tuple[str, ...] = (
    "transaction_id",
    "key",
    "kind",
    "phase",
    "related_id",
    "chain",
    "seq",
    "posted_at",
    "prev_hash",
    "hash",
    "account_code",
    "amount_minor",
    "currency",
    "references",
)


@dataclass(frozen=True, slots=True)
class ExportRow:
    """One entry of an export with its transaction's chain fields."""

    transaction_id: str
    key: str
    kind: str
    phase: str
    related_id: str | None
    chain: int
    seq: int
    posted_at: str
    prev_hash: bytes
    hash: bytes
    account_code: str
    amount_minor: int
    currency: str
    references: Mapping[str, str]

    def to_record(self) -> dict[str, str]:
        """The row as strings under `EXPORT_COLUMNS` (what a CSV export writes)."""
        return {
            "transaction_id": self.transaction_id,
            "key": self.key,
            "kind": self.kind,
            "phase": self.phase,
            "related_id": self.related_id or "",
            "chain": str(self.chain),
            "seq": str(self.seq),
            "posted_at": self.posted_at,
            "prev_hash": self.prev_hash.hex(),
            "hash": self.hash.hex(),
            "account_code": self.account_code,
            "amount_minor": str(self.amount_minor),
            "currency": self.currency,
            "references": json.dumps(dict(self.references), sort_keys=True, ensure_ascii=False),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> ExportRow:
        """Parse a row read from CSV (all strings) or a typed format (ints, datetimes, dicts).

        Raises ValueError (or KeyError for a missing column) when the row cannot be read.
        """
        references = record["references"]
        if isinstance(references, str):
            references = json.loads(references) if references else {}
        if not isinstance(references, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in references.items()
        ):
            raise ValueError("references must be an object of strings")
        posted_at = record["posted_at"]
        if isinstance(posted_at, str):
            posted_at = datetime.fromisoformat(posted_at)
        if not isinstance(posted_at, datetime):
            raise ValueError("posted_at must be an RFC 3339 timestamp")
        related = record.get("related_id")
        return cls(
            transaction_id=_text(record["transaction_id"]).lower(),
            key=_text(record["key"]),
            kind=_text(record["kind"]),
            phase=_text(record["phase"]),
            related_id=str(related).lower() if related not in (None, "") else None,
            chain=_integer(record["chain"]),
            seq=_integer(record["seq"]),
            posted_at=format_timestamp(posted_at),
            prev_hash=_digest(record["prev_hash"]),
            hash=_digest(record["hash"]),
            account_code=_text(record["account_code"]),
            amount_minor=_integer(record["amount_minor"]),
            currency=_text(record["currency"]),
            references=dict(references),
        )


@dataclass(frozen=True, slots=True)
class Problem:
    #: 1-based position of the first offending row among the data rows (a CSV's header not counted).
    row: int
    transaction_id: str | None
    reason: str


@dataclass(slots=True)
class Report:
    rows: int = 0
    transactions: int = 0
    #: Per stripe: (first seq seen, last seq seen).
    chains: dict[int, tuple[int, int]] = field(default_factory=dict)
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


class Verifier:
    """Incremental verifier: feed rows in export order with `add`, then read `report` (or stop early)."""

    def __init__(self, *, allow_gaps: bool = False) -> None:
        self.allow_gaps = allow_gaps
        self.report = Report()
        #: Per stripe: (seq, hash) of the last transaction accepted.
        self.heads: dict[int, tuple[int, bytes]] = {}
        self._group: list[ExportRow] = []
        self._group_start = 0

    def add(self, row: ExportRow) -> bool:
        """Take the next row; False once a problem was found (see `report.problem`)."""
        if self.report.problem is not None:
            return False
        self.report.rows += 1
        if self._group and row.transaction_id != self._group[0].transaction_id and not self._close():
            return False
        if not self._group:
            self._group_start = self.report.rows
        self._group.append(row)
        return True

    def finish(self) -> Report:
        """Check the last transaction and return the report."""
        if self.report.problem is None and self._group:
            self._close()
        return self.report

    def _close(self) -> bool:
        group, self._group = self._group, []
        reason = _check_transaction(group, self.heads, allow_gaps=self.allow_gaps)
        head = group[0]
        if reason is not None:
            self.report.problem = Problem(self._group_start, head.transaction_id, reason)
            return False
        self.report.transactions += 1
        first_seq = self.report.chains.get(head.chain, (head.seq, head.seq))[0]
        self.report.chains[head.chain] = (first_seq, head.seq)
        self.heads[head.chain] = (head.seq, head.hash)
        return True


def verify_rows(rows: Iterable[ExportRow], *, allow_gaps: bool = False) -> Report:
    """Check an export; stops at the first problem, which the report names."""
    verifier = Verifier(allow_gaps=allow_gaps)
    for row in rows:
        if not verifier.add(row):
            break
    return verifier.finish()


def verify_records(records: Iterable[Mapping[str, object]], *, allow_gaps: bool = False) -> Report:
    """`verify_rows` over raw records (e.g. `csv.DictReader`), reporting an unreadable row as a problem."""
    verifier = Verifier(allow_gaps=allow_gaps)
    for number, record in enumerate(records, start=1):
        try:
            row = ExportRow.from_record(record)
        except (KeyError, ValueError, TypeError) as exc:
            verifier.report.problem = Problem(number, None, f"unreadable row: {exc!r}")
            return verifier.report
        if not verifier.add(row):
            break
    return verifier.finish()


_SHARED = ("key", "kind", "phase", "related_id", "chain", "seq", "posted_at", "prev_hash", "hash", "references")


def transaction_hash(group: Sequence[ExportRow]) -> bytes:
    """The chain hash of one transaction recomputed from its export rows (all of them, in any order)."""
    head = group[0]
    canonical = canonical_bytes(
        tx_id=head.transaction_id,
        key=head.key,
        kind=head.kind,
        phase=head.phase,
        related_id=head.related_id,
        chain=head.chain,
        seq=head.seq,
        prev_hash=head.prev_hash,
        posted_at=head.posted_at,
        entries=[(row.account_code, row.amount_minor, row.currency) for row in group],
        references=head.references,
    )
    return compute_hash(canonical)


def _check_transaction(group: list[ExportRow], heads: dict[int, tuple[int, bytes]], *, allow_gaps: bool) -> str | None:
    head = group[0]
    for row in group[1:]:
        for name in _SHARED:
            if getattr(row, name) != getattr(head, name):
                return f"rows of one transaction disagree on {name}"
    if len(group) < 2:
        return "transaction has fewer than two entries"
    totals: dict[str, int] = {}
    for row in group:
        totals[row.currency] = totals.get(row.currency, 0) + row.amount_minor
    unbalanced = sorted(c for c, total in totals.items() if total != 0)
    if unbalanced:
        return f"transaction does not sum to zero in {', '.join(unbalanced)}"
    if transaction_hash(group) != head.hash:
        return "hash mismatch: the transaction's content was altered"
    previous = heads.get(head.chain)
    if previous is None:
        if head.seq == 1 and head.prev_hash != GENESIS_HASH:
            return f"chain {head.chain} broken: its first transaction does not start from the genesis hash"
        return None
    last_seq, last_hash = previous
    if head.seq <= last_seq:
        return f"chain {head.chain} out of order: seq {head.seq} after {last_seq}"
    if head.seq != last_seq + 1:
        if allow_gaps:
            return None
        return f"chain {head.chain} broken: seq {head.seq} follows {last_seq}"
    if head.prev_hash != last_hash:
        return f"chain {head.chain} broken: prev_hash does not match the hash of seq {last_seq}"
    return None


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {value!r}")
    return value


def _integer(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError(f"expected an integer, got {value!r}")


def _digest(value: object) -> bytes:
    if isinstance(value, bytes):
        raw = value
    elif isinstance(value, str):
        raw = bytes.fromhex(value)
    else:
        raise ValueError(f"expected a hex digest, got {value!r}")
    if len(raw) != 32:
        raise ValueError("a digest must be 32 bytes")
    return raw
