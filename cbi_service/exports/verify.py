"""Offline check of a ledger export file (CSV, Parquet or XLSX): no database, no service code beyond `ledger`.

Hashing, balancing and chain links are `ledger.verify`'s; this module reads the file in constant memory,
undoes what the spreadsheet formats add (the neutralisation of spreadsheet text, `kit.cells.restore` of
`SPREADSHEET_TEXT_COLUMNS`, in CSV and XLSX; OOXML's `_xHHHH_` escapes of control characters in XLSX),
checks what only the export adds (the `amount` must equal `amount_minor` in the currency's digits, every
CSV line has the header's number of fields) and turns the verifier's row index into the file's own
position: the line number of a CSV (header = line 1, a quoted field may span lines), the 1-based row of
a Parquet file, or the sheet and row of an XLSX workbook (header = row 1 of each sheet).

What a pass proves: every transaction sums to zero per currency, no transaction's content was altered,
and each chain stripe is unbroken from its first transaction in the file. A time-window export starts
mid-stripe, so its first transaction per stripe is trusted for its `prev_hash` (deleting the very first
rows of a window is therefore undetectable from the file alone: compare with another export that covers
them). An export filtered by programme holds whole transactions but not whole chain stripes: verify it with
`allow_gaps`, which checks every hash and balance and the links between consecutive transactions
present, and accepts the missing sequence numbers.

With the window's signed manifest (`exports.manifest`, signature checked by the caller) a pass proves
more: the file tallies to the manifest's statement, so nothing was cut from either end or the middle. A
manifest of a programme's window implies `allow_gaps` (its digest of every hash stands in for the links).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from cbi_service.exports.manifest import Tally, TransactionHead, differences
from cbi_service.exports.rows import SPREADSHEET_TEXT_COLUMNS, amount_exponent
from cbi_service.exports.sheets import NotAWorkbook, Workbook
from cbi_service.kit.cells import restore
from ledger.verify import EXPORT_COLUMNS, ExportRow, Problem, Verifier

PARQUET_MAGIC = b"PAR1"
ZIP_MAGIC = b"PK\x03\x04"
READ_BATCH = 10_000
_DECIMAL = re.compile(r"^(-?)([0-9]+)(?:\.([0-9]+))?$")  # ASCII digits only
_OOXML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")

Records = Iterator[tuple[str, Mapping[str, object] | str]]


@dataclass(frozen=True)
class VerificationReport:
    ok: bool
    rows: int
    transactions: int
    #: Chain stripes seen, and whether each of them starts at its first transaction (seq 1).
    stripes: int
    from_genesis: bool
    #: Where the first problem is: "line 12" (CSV), "row 11" (Parquet) or "row 12 of sheet entries" (XLSX);
    #: None when the file is whole.
    location: str | None = None
    transaction_id: str | None = None
    reason: str | None = None
    #: Against a manifest: what the file lacks or adds, most telling first (empty when it matches).
    differences: tuple[str, ...] = ()


class UnreadableExport(Exception):
    """The file is not an export this tool can read (wrong format, or columns missing)."""


def verify_file(
    path: Path, *, allow_gaps: bool = False, manifest: Mapping[str, Any] | None = None
) -> VerificationReport:
    """Check the file, and against `manifest` (one whose signature was checked) when given."""
    with path.open("rb") as file:
        magic = file.read(4)
    if magic == ZIP_MAGIC:
        records = _xlsx_records(path)
    elif magic == PARQUET_MAGIC:
        records = _parquet_records(path)
    else:
        records = _csv_records(path)
    if manifest is not None and manifest["window"]["programme_id"] is not None:
        allow_gaps = True
    return _verify(records, allow_gaps=allow_gaps, manifest=manifest)


def _missing_columns(names: list[str]) -> None:
    missing = [c for c in EXPORT_COLUMNS if c not in names]
    if missing:
        raise UnreadableExport(f"not a ledger export: columns missing: {', '.join(missing)}")


def _csv_records(path: Path) -> Records:
    """("line N" where the record starts, record) or ("line N", why the line cannot be a record)."""
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
                yield f"line {line}", f"unreadable CSV: {exc}"
                return
            if len(fields) != width:
                yield f"line {line}", f"has {len(fields)} fields, the header {width}"
                return
            record: dict[str, object] = dict(zip(header, fields, strict=True))
            _restore_spreadsheet_text(record)
            yield f"line {line}", record
            line = reader.line_num + 1


def _restore_spreadsheet_text(record: dict[str, object]) -> None:
    for name in SPREADSHEET_TEXT_COLUMNS:
        value = record.get(name)
        if isinstance(value, str):
            record[name] = restore(value)


def _parquet_records(path: Path) -> Records:
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
            yield f"row {number}", record


def _ooxml_text(value: object) -> object:
    """A cell's text as the spreadsheet shows it: `_xHHHH_` is the character HHHH (`_x005F_` a literal `_`)."""
    if isinstance(value, str) and "_x" in value:
        return _OOXML_ESCAPE.sub(lambda match: chr(int(match.group(1), 16)), value)
    return value


def _xlsx_records(path: Path) -> Records:
    """The rows of every sheet in order, each sheet headed by the same column names. An empty cell reads
    as the empty text, as in a CSV; numbers stay numbers (`_amount_problem` checks those of `amount`)."""
    with path.open("rb") as file:
        try:
            book = Workbook(file)
        except NotAWorkbook as exc:
            raise UnreadableExport(f"not an XLSX workbook: {exc}") from None
        try:
            header: list[str] | None = None
            for title, part in book.sheets:
                rows = book.rows(part)
                try:
                    first, cells = next(rows, (1, []))
                except NotAWorkbook as exc:
                    raise UnreadableExport(f"not an XLSX workbook: {exc}") from None
                names = [str(_ooxml_text(name)) for name in cells if name is not None]
                if header is None:
                    _missing_columns(names)
                elif names != header or first != 1:
                    yield f"row 1 of sheet {title}", "does not repeat the first sheet's header"
                    return
                header = columns = names
                width = len(columns)
                try:
                    for number, values in rows:
                        where = f"row {number} of sheet {title}"
                        if any(value is not None for value in values[width:]):
                            yield where, f"has cells past the header's {width} columns"
                            return
                        padded = (*values[:width], *(None,) * (width - len(values)))
                        record: dict[str, object] = {
                            name: "" if value is None else _ooxml_text(value)
                            for name, value in zip(columns, padded, strict=True)
                        }
                        _restore_spreadsheet_text(record)
                        yield where, record
                except NotAWorkbook as exc:
                    yield f"sheet {title}", f"unreadable XLSX: {exc}"
                    return
            if header is None:
                raise UnreadableExport("not a ledger export: the workbook has no sheet")
        finally:
            book.close()


def _amount_problem(record: Mapping[str, object]) -> str | None:
    """Why the decimal `amount` disagrees with `amount_minor`, if it does (a reader sees `amount`).

    In XLSX `amount` is a number (when it has at most 15 significant digits, see `exports.writers`): the
    decimal a spreadsheet shows is its shortest form to 15 digits, compared by value.
    """
    amount = record.get("amount")
    if amount is None:
        return None
    currency, minor = record["currency"], record["amount_minor"]
    if not isinstance(currency, str):
        return None
    if isinstance(amount, int | float) and not isinstance(amount, bool):
        shown = Decimal(format(amount, ".15g"))
        try:
            exact = Decimal(int(str(minor).strip())).scaleb(-amount_exponent(currency))
        except ValueError:
            return None  # the verifier reports the unreadable amount_minor
        return None if shown == exact else f"amount {shown} does not equal amount_minor {minor}"
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


def _verify(records: Records, *, allow_gaps: bool, manifest: Mapping[str, Any] | None) -> VerificationReport:
    verifier = Verifier(allow_gaps=allow_gaps)
    tally = Tally()
    #: Position in the file of the first row of the last two transactions (the verifier names one of them).
    starts: dict[int, str] = {}
    current: str | None = None
    found: Problem | None = None
    found_at = ""
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
            tally.add_transaction(
                TransactionHead(
                    row.transaction_id, row.chain, row.seq, row.posted_at, row.prev_hash.hex(), row.hash.hex()
                )
            )
        debit = -row.amount_minor if row.amount_minor < 0 else 0
        tally.add_entries(row.currency, 1, debit, max(row.amount_minor, 0))
        mismatch = _amount_problem(record)
        if not verifier.add(row):
            break
        if mismatch is not None:
            found, found_at = Problem(index, row.transaction_id, mismatch), position
            break
    report = verifier.finish() if found is None else verifier.report
    if found is None and report.problem is not None:
        found = report.problem
        found_at = starts.get(found.row, f"entry {found.row}")
    chains = report.chains
    missing = tuple(differences(dict(manifest), tally.statement())) if manifest is not None and found is None else ()
    return VerificationReport(
        ok=found is None and not missing,
        rows=report.rows,
        transactions=report.transactions,
        stripes=len(chains),
        from_genesis=all(first == 1 for first, _ in chains.values()),
        location=None if found is None else found_at,
        transaction_id=None if found is None else found.transaction_id,
        reason=None if found is None else found.reason,
        differences=missing,
    )
