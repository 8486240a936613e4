"""The hash chain and the offline verifier: an export verifies, and every kind of tampering is caught."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
from datetime import UTC, datetime
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger import AccountKind, Ledger
from ledger.chain import GENESIS_HASH, canonical_bytes, compute_hash, reference_canonical_bytes
from ledger.verify import EXPORT_COLUMNS, ExportRow, transaction_hash, verify_records, verify_rows
from tests.ledger.support import create_wallet, transfer

texts = st.text(st.characters(codec="utf-8"), max_size=12)


@given(
    key=texts,
    kind=texts,
    codes=st.lists(texts, min_size=2, max_size=4),
    amounts=st.lists(st.integers(-(2**62), 2**62), min_size=2, max_size=4),
    references=st.dictionaries(texts, texts, max_size=3),
    related=st.none() | st.uuids(),
    seq=st.integers(1, 2**62),
)
def test_fast_canonical_encoding_is_the_json_definition(
    key: str,
    kind: str,
    codes: list[str],
    amounts: list[int],
    references: dict[str, str],
    related: UUID | None,
    seq: int,
) -> None:
    fields = {
        "tx_id": UUID(int=seq),
        "key": key,
        "kind": kind,
        "phase": "posted",
        "related_id": related,
        "chain": seq % 64,
        "seq": seq,
        "prev_hash": seq.to_bytes(32, "big"),
        "posted_at": datetime(2026, 11, 22, 8, 23, 45, 99842, tzinfo=UTC),
        "entries": [(c, a, "COP") for c, a in zip(codes, amounts, strict=False)],
        "references": references,
    }
    assert canonical_bytes(**fields) == reference_canonical_bytes(**fields)  # type: ignore[arg-type]


async def _ledger_export(engine: AsyncEngine) -> list[ExportRow]:
    """A small ledger with every phase, spread over several chain stripes, exported in time order."""
    async with engine.begin() as conn:
        ledger = Ledger(conn, stripe=0)
        donor = (await ledger.create_account("donor", "COP", AccountKind.EQUITY)).id
        wallet = await create_wallet(ledger, "COP")
        spent = (await ledger.create_account("spent", "COP", AccountKind.EXPENSE)).id
        await ledger.post(transfer("fund", donor, wallet, 1000, references={"grant": "Ñandú ✓"}))
        hold = await ledger.post(transfer("hold", wallet, spent, 300, pending=True))
        await ledger.post_pending(hold.id, "hold-post", 200)
        other = await ledger.post(transfer("hold-2", wallet, spent, 50, pending=True))
        await ledger.void_pending(other.id, "hold-2-void")
        fund = await ledger.post(transfer("fund-2", donor, wallet, 10))
        await ledger.reverse(fund.id, "fund-2-reversal")
    for stripe in (5, 9):
        async with engine.begin() as conn:
            await Ledger(conn, stripe=stripe).post_many(
                [transfer(f"s{stripe}-{i}", donor, wallet, i + 1) for i in range(3)]
            )
    async with engine.connect() as conn:
        rows = [row async for row in Ledger(conn).export_rows()]
        assert (await Ledger(conn).verify_chain()).ok
    return rows


async def test_export_verifies_offline_and_through_csv(engine: AsyncEngine) -> None:
    rows = await _ledger_export(engine)
    report = verify_rows(rows)
    assert report.ok, report.problem
    assert report.transactions == 13
    assert set(report.chains) == {0, 5, 9}
    assert report.chains[0] == (1, 7)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*EXPORT_COLUMNS, "description"])
    writer.writeheader()
    for row in rows:
        writer.writerow({**row.to_record(), "description": "ignored"})
    buffer.seek(0)
    assert verify_records(csv.DictReader(buffer)).ok


def _replace(row: ExportRow, **changes: object) -> ExportRow:
    return dataclasses.replace(row, **changes)  # type: ignore[arg-type]


def _rehashed(rows: list[ExportRow], key: str) -> list[ExportRow]:
    """The rows with the hash of transaction `key` recomputed from its (possibly forged) content."""
    digest = transaction_hash([r for r in rows if r.key == key])
    return [_replace(r, hash=digest) if r.key == key else r for r in rows]


async def test_tampering_is_detected_at_the_first_bad_row(engine: AsyncEngine) -> None:
    rows = await _ledger_export(engine)
    first_of: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        first_of.setdefault(row.transaction_id, number)
    tx_ids = list(first_of)
    target = tx_ids[2]
    i = first_of[target] - 1

    def check(tampered: list[ExportRow], row: int, reason: str) -> None:
        report = verify_rows(tampered)
        assert report.problem is not None
        assert report.problem.row == row
        assert reason in report.problem.reason

    # Amount changed on one entry: the transaction no longer balances.
    tampered = list(rows)
    tampered[i] = _replace(rows[i], amount_minor=rows[i].amount_minor + 1)
    check(tampered, i + 1, "does not sum to zero")
    # Both entries changed consistently: the hash gives it away.
    tampered = list(rows)
    tampered[i] = _replace(rows[i], amount_minor=rows[i].amount_minor * 2)
    tampered[i + 1] = _replace(rows[i + 1], amount_minor=rows[i + 1].amount_minor * 2)
    check(tampered, i + 1, "hash mismatch")
    # A reference edited.
    tampered = [_replace(r, references={"grant": "other"}) if r.transaction_id == target else r for r in rows]
    check(tampered, i + 1, "hash mismatch")
    # One entry row deleted.
    check(rows[:i] + rows[i + 1 :], i + 1, "")
    # A whole transaction deleted: the chain is broken at the next one.
    next_start = first_of[tx_ids[3]] - 1
    without = rows[:i] + rows[next_start:]
    check(without, i + 1, "chain 0 broken")
    # A forged transaction inserted (recomputing its own hash does not help: the links break).
    forged = [_replace(r, transaction_id=str(UUID(int=42)), key="forged") for r in rows[i : i + 2]]
    check(rows[:i] + forged + rows[i:], i + 1, "hash mismatch")
    # Two transactions swapped.
    second_next = first_of[tx_ids[4]] - 1
    swapped = rows[:i] + rows[next_start:second_next] + rows[i:next_start] + rows[second_next:]
    check(swapped, i + 1, "chain 0 broken")


async def test_partial_exports_and_gaps(engine: AsyncEngine) -> None:
    rows = await _ledger_export(engine)
    # A time window that starts mid-chain: the first row of each stripe is trusted for its prev_hash.
    later = [r for r in rows if r.key not in {"fund", "hold"}]
    assert verify_rows(later).ok
    # The same window starting at seq 1 of a stripe must start from the genesis hash. A forged prev_hash alone
    # changes the content the hash covers; with the hash recomputed to match, the genesis check still refuses it.
    forged_start = [_replace(r, prev_hash=b"\x01" * 32) if r.key == "fund" else r for r in rows]
    report = verify_rows(forged_start)
    assert report.problem is not None
    assert report.problem.row == 1
    assert "hash mismatch" in report.problem.reason
    report = verify_rows(_rehashed(forged_start, "fund"))
    assert report.problem is not None
    assert report.problem.row == 1
    assert "chain 0 broken: its first transaction does not start from the genesis hash" in report.problem.reason
    # An account-filtered export leaves holes in the stripes: accepted only when asked for.
    holes = [r for r in rows if not r.key.startswith("hold-2")]
    assert not verify_rows(holes).ok
    assert verify_rows(holes, allow_gaps=True).ok
    assert rows[0].prev_hash == GENESIS_HASH


def test_unreadable_rows_are_reported() -> None:
    report = verify_records([{"transaction_id": "x"}])
    assert report.problem is not None
    assert report.problem.row == 1
    assert "unreadable" in report.problem.reason


async def test_database_tampering_is_found_by_verify_chain(engine: AsyncEngine) -> None:
    await _ledger_export(engine)
    async with engine.begin() as conn:
        # Someone with superuser rights bypasses the append-only triggers.
        await conn.execute(text("ALTER TABLE ledger.entries DISABLE TRIGGER entries_append_only"))
        await conn.execute(
            text(
                "UPDATE ledger.entries SET amount = amount * 2 WHERE tx_id = "
                "(SELECT id FROM ledger.transactions WHERE key = 'fund')"
            )
        )
        report = await Ledger(conn).verify_chain()
        assert report.problem is not None
        assert "hash mismatch" in report.problem.reason


def test_hash_is_sha256_of_the_canonical_bytes() -> None:
    canonical = canonical_bytes(
        tx_id=UUID(int=1),
        key="k",
        kind="transfer",
        phase="posted",
        related_id=None,
        chain=0,
        seq=1,
        prev_hash=GENESIS_HASH,
        posted_at="2026-01-01T00:00:00.000000Z",
        entries=[("b", 5, "COP"), ("a", -5, "COP")],
        references={},
    )
    assert canonical == (
        b'{"chain":0,"entries":[["a",-5,"COP"],["b",5,"COP"]],"id":"00000000-0000-0000-0000-000000000001",'
        b'"key":"k","kind":"transfer","phase":"posted","posted_at":"2026-01-01T00:00:00.000000Z",'
        b'"prev_hash":"' + b"0" * 64 + b'","references":{},"related_id":null,"seq":1,"v":1}'
    )
    assert compute_hash(canonical) == hashlib.sha256(canonical).digest()


@pytest.mark.parametrize("value", ["2026-11-22T08:23:45.099842Z", "2026-11-22T03:23:45.099842-05:00"])
def test_export_row_normalises_timestamps(value: str) -> None:
    record = {
        "transaction_id": str(UUID(int=1)),
        "key": "k",
        "kind": "t",
        "phase": "posted",
        "related_id": "",
        "chain": "0",
        "seq": "1",
        "posted_at": value,
        "prev_hash": "00" * 32,
        "hash": "11" * 32,
        "account_code": "a",
        "amount_minor": "-5",
        "currency": "COP",
        "references": "{}",
    }
    assert ExportRow.from_record(record).posted_at == "2026-11-22T08:23:45.099842Z"


async def test_database_and_python_encode_awkward_text_identically(engine: AsyncEngine) -> None:
    """Single postings are hashed inside PostgreSQL, bulk ones in Python: both must follow `canonical_bytes`."""
    awkward = 'quote " back \\ nl \n tab \t ctl \x01\x1f del \x7f é 漢 😀 \u2028'
    async with engine.begin() as conn:
        ledger = Ledger(conn)
        first = (await ledger.create_account(f"a:{awkward}", "COP", AccountKind.ASSET)).id
        second = (await ledger.create_account("b:z", "COP", AccountKind.ASSET)).id
        single = await ledger.post(
            transfer(f"k:{awkward}", first, second, 7, kind=f"kind {awkward}", references={awkward: awkward, "a": ""})
        )
        bulk = await ledger.post_many(
            [transfer(f"bulk:{awkward}:{i}", second, first, 1, references={awkward: "x"}) for i in range(2)]
        )
    for tx in (single, *bulk):
        expected = canonical_bytes(
            tx_id=tx.id,
            key=tx.key,
            kind=tx.kind,
            phase=tx.phase.value,
            related_id=None,
            chain=tx.chain,
            seq=tx.seq,
            prev_hash=tx.prev_hash,
            posted_at=tx.posted_at,
            entries=[(e.account_code, e.amount, tx.currency) for e in tx.entries],
            references=tx.references,
        )
        assert compute_hash(expected) == tx.hash
    async with engine.connect() as conn:
        assert (await Ledger(conn).verify_chain()).ok
