"""The hash chain's canonical encoding, shared by the writer and the offline verifier.

Every transaction is appended to one of several chain stripes (`ledger.chains`); within a stripe
transactions are numbered `seq` = 1, 2, ... and each one's hash covers the previous one's (`prev_hash`;
the first of a stripe uses 32 zero bytes). Stripes let unrelated postings proceed in parallel: a writer
locks only the head of the stripe it appends to.

Canonical encoding, version 1 (what is hashed, with SHA-256): the UTF-8 bytes of a JSON object with keys
sorted, no whitespace (separators "," and ":"), non-ASCII characters written as themselves, holding

    v           1
    id          transaction id, lowercase hyphenated UUID
    key         the transaction's idempotency key
    kind        the caller's kind ("transfer", "funding", ...)
    phase       "posted" | "pending" | "post_pending" | "void_pending"
    related_id  the resolved pending transaction or the reversed transaction (lowercase UUID), else null
    chain       stripe number (integer)
    seq         position in the stripe (integer, from 1)
    prev_hash   previous hash in the stripe, 64 lowercase hex digits
    posted_at   RFC 3339 UTC with microseconds: "2026-11-22T08:23:45.099842Z"
    entries     [[account_code, amount, currency], ...] sorted (by code, then amount, then currency);
                amount a signed integer in minor units (credit positive)
    references  object of string -> string

Only fields an export row carries are hashed, so an export can be verified without the database.

What the hash covers, then, is the money and its meaning: which transaction (id, key, kind, phase, the
transaction it resolves or reverses), when (posted_at), where in its stripe (chain, seq, prev_hash), which
accounts moved by how much in which currency (entries), and the caller's references. What it does not
cover, on purpose:

- `description`: free text for people, carrying no amount or account; it is not part of an export row.
- account ids: entries are hashed by account *code*, the name an export and an auditor use. The code of
  an id cannot change (the database refuses updates of an account's code, currency, kind and flags), so
  id and code are interchangeable inside the database, while outside it only the code means anything.
- derived per-entry values (`idx`, `posted`, `account_seq`, `balance_after`) and the account counters:
  they follow from the hashed entries; `Ledger.verify_balances` recomputes them.

Leaving these out is acceptable because no stored row can be edited: triggers refuse UPDATE, DELETE and
TRUNCATE of transactions and entries, so what was hashed at posting time stays next to what was not. A
change made around those triggers (a superuser disabling them) to a hashed field breaks the chain; one to
a description is harmless to the books, and one to the derived values is found by `verify_balances`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import TypedDict, Unpack
from uuid import UUID

GENESIS_HASH = bytes(32)
FORMAT_VERSION = 1

_string: Callable[[str], str] = json.encoder.encode_basestring


def format_timestamp(value: datetime) -> str:
    """RFC 3339 UTC with exactly six fraction digits, the only timestamp form that is hashed."""
    if value.tzinfo is None:
        raise ValueError("posted_at must be timezone-aware")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def canonical_bytes(
    *,
    tx_id: UUID | str,
    key: str,
    kind: str,
    phase: str,
    related_id: UUID | str | None,
    chain: int,
    seq: int,
    prev_hash: bytes,
    posted_at: datetime | str,
    entries: Iterable[tuple[str, int, str]],
    references: Mapping[str, str],
) -> bytes:
    """Encode one transaction as described in the module docstring.

    `posted_at` may be given already formatted (see `format_timestamp`), which bulk writers use to format
    a shared timestamp once. The text is assembled directly rather than through `json.dumps` because bulk
    posting hashes every transaction; it is byte-for-byte what
    `json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)` produces
    (`reference_canonical_bytes`), with keys written in sorted order.
    """
    entry_text = ",".join(
        [f"[{_string(code)},{int(amount)},{_string(currency)}]" for code, amount, currency in sorted(entries)]
    )
    reference_text = (
        ",".join([f"{_string(k)}:{_string(v)}" for k, v in sorted(references.items())]) if references else ""
    )
    related = "null" if related_id is None else f'"{str(related_id).lower()}"'
    stamp = posted_at if isinstance(posted_at, str) else format_timestamp(posted_at)
    return (
        f'{{"chain":{int(chain)},"entries":[{entry_text}],"id":"{str(tx_id).lower()}","key":{_string(key)},'
        f'"kind":{_string(kind)},"phase":{_string(phase)},"posted_at":{_string(stamp)},'
        f'"prev_hash":"{prev_hash.hex()}","references":{{{reference_text}}},"related_id":{related},'
        f'"seq":{int(seq)},"v":{FORMAT_VERSION}}}'
    ).encode()


class CanonicalFields(TypedDict):
    """What `canonical_bytes` encodes, as keyword arguments."""

    tx_id: UUID | str
    key: str
    kind: str
    phase: str
    related_id: UUID | str | None
    chain: int
    seq: int
    prev_hash: bytes
    posted_at: datetime | str
    entries: Iterable[tuple[str, int, str]]
    references: Mapping[str, str]


def reference_canonical_bytes(**fields: Unpack[CanonicalFields]) -> bytes:
    """The canonical encoding spelled with the standard JSON encoder: the definition `canonical_bytes`
    must match (and what an independent verifier in any language reproduces)."""
    related_id, posted_at = fields["related_id"], fields["posted_at"]
    document = {
        "v": FORMAT_VERSION,
        "id": str(fields["tx_id"]).lower(),
        "key": fields["key"],
        "kind": fields["kind"],
        "phase": fields["phase"],
        "related_id": None if related_id is None else str(related_id).lower(),
        "chain": fields["chain"],
        "seq": fields["seq"],
        "prev_hash": fields["prev_hash"].hex(),
        "posted_at": posted_at if isinstance(posted_at, str) else format_timestamp(posted_at),
        "entries": [list(e) for e in sorted(fields["entries"])],
        "references": dict(fields["references"]),
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compute_hash(canonical: bytes) -> bytes:
    """SHA-256 of the canonical bytes; the chaining happens through `prev_hash` inside them."""
    return hashlib.sha256(canonical).digest()
