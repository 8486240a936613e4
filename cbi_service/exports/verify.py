"""Offline check of a ledger export file (CSV or Parquet): no database, no service code beyond `ledger`.

Hashing, balancing and chain links are `ledger.verify`'s; this module reads the file in constant memory,
undoes the CSV's neutralisation of spreadsheet text (`kit.cells.restore` of `SPREADSHEET_TEXT_COLUMNS`),
checks what only the export adds (the decimal `amount` must equal `amount_minor` in the currency's
digits, every CSV line has the header's number of fields) and turns the verifier's row index into the
file's own position: the line number of a CSV (header = line 1, a quoted field may span lines) or the
1-based row of a Parquet file.

What a pass proves: every transaction sums to zero per currency, no transaction's content was altered,
and each chain stripe is unbroken from its first transaction in the file. A time-window export starts
mid-stripe, so its first transaction per stripe is trusted for its `prev_hash` (deleting the very first
rows of a window is therefore undetectable from the file alone: compare with another export that covers
them). An export filtered by programme holds whole transactions but not whole stripes: verify it with
`allow_gaps`, which checks every hash and balance and the links between consecutive transactions
present, and accepts the missing sequence numbers.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from cbi_service.exports.rows import SPREADSHEET_TEXT_COLUMNS, amount_exponent
from cbi_service.kit.cells import restore
from ledger.verify import EXPORT_COLUMNS, ExportRow, Problem, Verifier

PARQUET_MAGIC = b"PAR1"
ZIP_MAGIC = b"PK\x03\x04"
READ_BATCH = 10_000
_DECIMAL = re.compile(r"^(-?)([0-9]+)(?:\.([0-9]+))?$")  # ASCII digits only


@dataclass(frozen=True)
class VerificationReport:
    ok: bool
    rows: int
    transactions: int
    #: Chain stripes seen, and whether each of them starts at its first transaction (seq 1).
    stripes: int
    from_genesis: bool
    #: Where the first problem is: "line 12" (CSV) or "row 11" (Parquet); None when the file is whole.
    location: str | None = None
    transaction_id: str | None = None
    reason: str | None = None


class UnreadableExport(Exception):
    """The file is not an export this tool can read (wrong format, or columns missing)."""


def verify_file(path: Path, *, allow_gaps: bool = False) -> VerificationReport:
    with path.open("rb") as file:
        magic = file.read(4)
    if magic == ZIP_MAGIC:
        raise UnreadableExport("XLSX exports are for reading; verify the CSV or Parquet export instead")
    if magic == PARQUET_MAGIC:
        return _verify(_parquet_records(path), "row", allow_gaps=allow_gaps)
    return _verify(_csv_records(path), "line", allow_gaps=allow_gaps)


def _missing_columns(names: list[str]) -> None:
    missing = [c for c in EXPORT_COLUMNS if c not in names]
    if missing:
        raise UnreadableExport(f"not a ledger export: columns missing: {', '.join(missing)}")


def _csv_records(path: Path) -> Iterator[tuple[int, Mapping[str, object] | str]]:
    """(line where the record starts, record) or (line, why the line cannot be a record)."""
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file)
        try:
            header = next(reader)
        except StopIteration:
            raise UnreadableExport("the file is empty") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise UnreadableExport(f"not a CSV file: {exc}") from None
        _missing_columns(header)
        width = len(header)
        line = reader.line_num + 1
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                yield line, f"unreadable CSV: {exc}"
                return
            if len(fields) != width:
                yield line, f"has {len(fields)} fields, the header {width}"
                return
            record = dict(zip(header, fields, strict=True))
            for name in SPREADSHEET_TEXT_COLUMNS:
                if name in record:
                    record[name] = restore(record[name])
            yield line, record
            line = reader.line_num + 1


def _parquet_records(path: Path) -> Iterator[tuple[int, Mapping[str, object] | str]]:
    try:
        file = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise UnreadableExport(f"not a Parquet file: {exc}") from None
    names = file.schema_arrow.names
    _missing_columns(names)
    wanted = [*EXPORT_COLUMNS, *(["amount"] if "amount" in names else [])]
    number = 0
    for batch in file.iter_batches(batch_size=READ_BATCH, columns=wanted):
        for record in batch.to_pylist():
            number += 1
            yield number, record


def _amount_problem(record: Mapping[str, object]) -> str | None:
    """Why the decimal `amount` disagrees with `amount_minor`, if it does (a reader sees `amount`)."""
    amount = record.get("amount")
    if amount is None:
        return None
    currency, minor = record["currency"], record["amount_minor"]
    if not isinstance(currency, str):
        return None
    match = _DECIMAL.match(str(amount))
    if match is None:
        return f"amount {amount!r} is not a decimal number"
    exponent = amount_exponent(currency)
    fraction = match.group(3) or ""
    if len(fraction) != exponent:
        return f"amount {amount!r} does not have the {exponent} decimal digits of {currency}"
    value = int(match.group(2) + fraction)
    if match.group(1):
        value = -value
    if str(value) != str(minor).strip():
        return f"amount {amount} does not equal amount_minor {minor}"
    return None


def _verify(
    records: Iterator[tuple[int, Mapping[str, object] | str]], unit: str, *, allow_gaps: bool
) -> VerificationReport:
    verifier = Verifier(allow_gaps=allow_gaps)
    #: Position in the file of the first row of the last two transactions (the verifier names one of them).
    starts: dict[int, int] = {}
    current: str | None = None
    found: Problem | None = None
    found_at = 0
    for index, (position, record) in enumerate(records, start=1):
        if isinstance(record, str):
            found, found_at = Problem(index, None, record), position
            break
        try:
            row = ExportRow.from_record(record)
        except (KeyError, ValueError, TypeError) as exc:
            found, found_at = Problem(index, None, f"unreadable row: {exc}"), position
            break
        if row.transaction_id != current:
            current = row.transaction_id
            starts[index] = position
            if len(starts) > 2:
                del starts[min(starts)]
        mismatch = _amount_problem(record)
        if not verifier.add(row):
            break
        if mismatch is not None:
            found, found_at = Problem(index, row.transaction_id, mismatch), position
            break
    report = verifier.finish() if found is None else verifier.report
    if found is None and report.problem is not None:
        found = report.problem
        found_at = starts.get(found.row, found.row)
    chains = report.chains
    return VerificationReport(
        ok=found is None,
        rows=report.rows,
        transactions=report.transactions,
        stripes=len(chains),
        from_genesis=all(first == 1 for first, _ in chains.values()),
        location=None if found is None else f"{unit} {found_at}",
        transaction_id=None if found is None else found.transaction_id,
        reason=None if found is None else found.reason,
    )
