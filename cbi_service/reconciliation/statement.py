"""Reading a provider's statement CSV: streamed from a file object, checked line by line; and what every
statement format reads into (`Line`, `Summary`, `StatementError`; the other formats are in `formats`).

Columns `entitlement_id`, `provider_ref`, `amount`, `currency`, `date` (any order, any case; extra columns
ignored; comma or semicolon separated; UTF-8 with or without BOM). `amount` is a decimal in the currency's
major unit with at most its ISO 4217 digits ("150000", "150000.5" and "150000.50" are the same COP
amount); `date` is a date (YYYY-MM-DD) or an RFC 3339 timestamp, taken as its UTC day. An `entitlement_id`
that is not a UUID is kept as written: it cannot be in our ledger. Blank lines are skipped. Lines and
fields are read within `TextLimits` (`kit.bounded`): one huge line is refused, never held whole.
"""

from __future__ import annotations

import csv
import io
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, localcontext
from typing import IO

from cbi_service.kit.bounded import BoundedReader, LimitExceeded, TextLimits
from cbi_service.kit.money import currency_exponent

COLUMNS = ("entitlement_id", "provider_ref", "amount", "currency", "date")
MAX_ERRORS = 20
MAX_LINES = 1_000_000
MAX_MINOR = 2**63 - 1  # a BIGINT
_AMOUNT = re.compile(r"^([+-]?)([0-9]{1,17})(?:\.([0-9]+))?$")  # ASCII digits only


class StatementError(Exception):
    """The statement cannot be reconciled; `errors` are (line, column, message), the first ones found."""

    def __init__(self, errors: list[tuple[int, str, str]]) -> None:
        super().__init__(f"{len(errors)} problem(s), first at line {errors[0][0]}")
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Line:
    line_no: int
    entitlement_ref: str
    entitlement_id: uuid.UUID | None
    provider_ref: str | None
    amount_minor: int
    currency: str
    value_date: date


@dataclass
class Summary:
    """What reading a statement found: its format, lines, dates and problems; `skipped` counts the
    transactions a standard statement reports that did not move money (not booked, not settled)."""

    format: str = "csv"
    lines: int = 0
    skipped: int = 0
    first_date: date | None = None
    last_date: date | None = None
    errors: list[tuple[int, str, str]] = field(default_factory=list)

    def add(self, line: Line) -> None:
        self.lines += 1
        if self.first_date is None or line.value_date < self.first_date:
            self.first_date = line.value_date
        if self.last_date is None or line.value_date > self.last_date:
            self.last_date = line.value_date


def parse_amount(text: str, currency: str) -> int:
    match = _AMOUNT.match(text)
    if match is None:
        raise ValueError("not a decimal number")
    exponent = currency_exponent(currency)
    fraction = match.group(3) or ""
    if len(fraction.rstrip("0")) > exponent:
        raise ValueError(f"{currency} has {exponent} decimal digits")
    fraction = fraction[:exponent].ljust(exponent, "0") if exponent else ""
    value = int(match.group(2) + fraction)
    if value > MAX_MINOR:
        raise ValueError("too large")
    return -value if match.group(1) == "-" else value


def minor_units(value: Decimal, currency: str) -> int:
    """An exact decimal amount in `currency`'s major unit as integer minor units (its ISO 4217 exponent),
    refusing digits the currency does not have; never through a float."""
    exponent = currency_exponent(currency)
    if not value.is_finite():
        raise ValueError("not a decimal number")
    with localcontext(prec=60):
        scaled = value.scaleb(exponent)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{currency} has {exponent} decimal digits")
    if abs(scaled) > MAX_MINOR:
        raise ValueError("too large")
    return int(scaled)


def entitlement_uuid(reference: str) -> uuid.UUID | None:
    """The entitlement a statement names: its UUID (with or without hyphens), or None when it is not one."""
    try:
        return uuid.UUID(reference)
    except ValueError:
        return None


def parse_date(text: str) -> date:
    if len(text) == 10:
        return date.fromisoformat(text)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("a timestamp needs a UTC offset")
    try:
        return moment.astimezone(UTC).date()
    except OverflowError:
        raise ValueError("out of range") from None


def read_statement(file: IO[bytes], summary: Summary, batch_size: int, limits: TextLimits) -> Iterator[list[Line]]:
    """Batches of parsed lines; problems go to `summary.errors` (reading stops after MAX_ERRORS).

    Raises StatementError at once if the header lacks a column, the file is not UTF-8 text or a line
    is over the limits.
    """
    text = io.TextIOWrapper(file, encoding="utf-8-sig", newline="")
    try:
        first = text.readline(limits.max_record_chars)
        text.seek(0)
        reader = BoundedReader(text, limits, delimiter=";" if first.count(";") > first.count(",") else ",")
        header = [name.strip().lower() for name in next(reader, [])]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise StatementError([(1, c, "column missing from the header") for c in missing])
        index = {c: header.index(c) for c in COLUMNS}
        width = max(index.values()) + 1
        batch: list[Line] = []
        start = reader.line_num + 1
        for fields in reader:
            line_no, start = start, reader.line_num + 1
            if not any(f.strip() for f in fields):
                continue
            if summary.lines >= MAX_LINES:
                summary.errors.append((line_no, "", f"a statement holds at most {MAX_LINES} lines"))
                break
            line = _parse_line(line_no, fields, index, width, summary)
            if line is None:
                if len(summary.errors) >= MAX_ERRORS:
                    break
                continue
            summary.add(line)
            batch.append(line)
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if batch:
            yield batch
    except UnicodeDecodeError:
        raise StatementError([(0, "", "the file is not UTF-8 text")]) from None
    except csv.Error as exc:
        raise StatementError([(0, "", f"not a readable CSV file: {exc}")]) from None
    except LimitExceeded as exc:
        raise StatementError([(0, "", str(exc))]) from None
    finally:
        text.detach()


def _parse_line(line_no: int, fields: list[str], index: dict[str, int], width: int, summary: Summary) -> Line | None:
    if len(fields) < width:
        summary.errors.append((line_no, "", f"has {len(fields)} fields, the header {width} or more"))
        return None
    values = {c: fields[i].strip() for c, i in index.items()}
    errors = summary.errors
    before = len(errors)
    currency = values["currency"].upper()
    try:
        currency_exponent(currency)
    except ValueError as exc:
        errors.append((line_no, "currency", str(exc)))
    amount = 0
    if len(errors) == before:
        try:
            amount = parse_amount(values["amount"], currency)
        except ValueError as exc:
            errors.append((line_no, "amount", str(exc)))
    value_date = date.min
    try:
        value_date = parse_date(values["date"])
    except ValueError:
        errors.append((line_no, "date", "not a date (YYYY-MM-DD) or RFC 3339 timestamp"))
    if len(errors) > before:
        return None
    reference = values["entitlement_id"]
    return Line(
        line_no=line_no,
        entitlement_ref=reference,
        entitlement_id=entitlement_uuid(reference),
        provider_ref=values["provider_ref"] or None,
        amount_minor=amount,
        currency=currency,
        value_date=value_date,
    )
