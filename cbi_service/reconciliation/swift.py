"""SWIFT MT940 customer statements, parsed by the `mt-940` library (with every fix of `mt940.Options.all`).

A line per statement line `:61:`, numbered by its line in the file. Its amount is signed by the
debit/credit mark: a debit (`D`, or `RC`, the reversal of a credit) is money paid out, a positive amount; a
credit (`C`, `RD`) is money coming back, a negative one. The currency is the statement's (its opening
balance, `:60F:` or `:60M:`), the date the entry date when the line gives one, else the value date, and
`provider_ref` the account servicing institution's reference (after `//`; `NONREF` is none).

The entitlement id is the end-to-end reference, looked for in the line's information `:86:` and its
references: the `EREF` of a structured `:86:` (`EREF+…` in the German layout, `/EREF/…/` in the SWIFT one),
else the one UUID written there or in the `:61:` customer reference or supplementary details (wrapped
`:86:` lines are read joined), else the customer reference as written (`NONREF` is none). Two different
UUIDs and no `EREF` is refused rather than guessed.

The file is read whole (the upload limit bounds it) and parsed one statement (`:20:` …) at a time, each
line within the upload's line limit. A field the library cannot read is refused naming its line. An `:86:`
after the statement's closing balance informs about the statement, not a transaction: it is not read as one.
"""

from __future__ import annotations

import bisect
import io
import logging
import re
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import IO, Any

import mt940
from mt940.models import Transactions
from mt940.tags import TAG_BY_ID, NonSwift, Statement, TransactionDetails

from cbi_service.kit.bounded import TextLimits
from cbi_service.reconciliation.statement import (
    MAX_ERRORS,
    MAX_LINES,
    Line,
    StatementError,
    Summary,
    entitlement_uuid,
    minor_units,
)

OPTIONS = mt940.Options.all()
# The library logs a field it cannot read with its text, and a statement's text may name people: never logged.
logging.getLogger("mt940").setLevel(logging.CRITICAL)
#: How the library finds a field's tag (`mt940.models.Transactions.parse`), to know each one's line.
_TAG = re.compile(r"^:\n?(?P<full_tag>(?P<tag>[0-9]{2}|NS)(?P<sub_tag>[A-Z])?):", re.MULTILINE)
_EREF = re.compile(r"/EREF/([^/]+)")
_UUID = re.compile(
    r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
    r"|(?<![0-9A-Za-z])[0-9A-Fa-f]{32}(?![0-9A-Za-z])"
)
_NONE = frozenset({"", "NONREF", "NOTPROVIDED"})
_LINE = "cbi_line"
_DETAILS = "cbi_details"
_LAYOUT = {
    "61": "not a statement line: YYMMDD[MMDD], C, D, RC or RD, the amount with a decimal comma, the type "
    "(such as NTRF), the reference[//the bank's reference]",
}


class _Refused(Exception):
    """A statement line (or the field at `line`) that cannot be reconciled, and why."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.where = (line, "", message)


def _decode(raw: bytes) -> str:
    """UTF-8 (a BOM dropped), else Latin-1: SWIFT's characters are ASCII, and Latin-1 reads any byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _fields(kept: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """(line in the file, tag) of every field the library will read in these kept lines, in its order."""
    starts, offset = [], 0
    for _, line in kept:
        starts.append(offset)
        offset += len(line) + 1
    joined = "\n".join(line for _, line in kept)
    matches = Transactions().sanitize_tag_id_matches(list(_TAG.finditer(joined)))
    return [(kept[bisect.bisect_right(starts, m.start("full_tag")) - 1][0], m["full_tag"]) for m in matches]


def _statements(text: str, limits: TextLimits) -> Iterator[tuple[str, list[tuple[int, str]]]]:
    """Each statement, from a `:20:` line to the next (as `mt940.parse_statements` splits a file), with its
    fields; what comes before the first `:20:` is a header (SWIFT blocks, a bank's lines) and holds none."""
    blocks: list[list[tuple[int, str]]] = [[]]
    for number, raw in enumerate(text.split("\n"), 1):
        if len(raw) > limits.max_record_chars:
            raise StatementError([(number, "", f"longer than {limits.max_record_chars} characters")])
        if raw.startswith(":20:"):
            blocks.append([])
        blocks[-1].append((number, raw))
    header, *statements = blocks
    if not statements:
        raise StatementError([(0, "", "no :20: (transaction reference number) opens a statement")])
    for lines in blocks:
        kept = [(n, line) for n, raw in lines if (line := raw.replace("\r", "").rstrip()) and line.strip() != "-"]
        fields = _fields(kept)  # the lines `Transactions.strip` keeps
        if lines is header and fields:
            number, tag = fields[0]
            raise StatementError([(number, "", f":{tag}: comes before the statement's first :20:")])
        if lines is not header:
            yield "\n".join(raw for _, raw in lines), fields


class _Tracker:
    """Post-processors that know which field the library is at: they stamp each `:61:` with its line and keep
    the raw `:86:` of a transaction, and tell which field failed when the library raises."""

    def __init__(self, tags: list[tuple[int, str]]) -> None:
        self.tags = tags
        self.done = 0
        self.in_transaction = False
        self.details = ""

    def processors(self) -> dict[str, list[Any]]:
        defaults = Transactions.DEFAULT_PROCESSORS
        slots: dict[str, Any] = {f"post_{tag.slug}": self.post for tag in TAG_BY_ID.values()}
        slots["pre_transaction_details"] = self.keep_details
        return {slot: [*defaults.get(slot, []), mine] for slot, mine in slots.items()}

    def failed(self) -> tuple[int, str]:
        return self.tags[self.done] if self.done < len(self.tags) else (0, "")

    def keep_details(self, transactions: Any, tag: Any, tag_dict: dict[str, Any]) -> dict[str, Any]:
        self.details = tag_dict.get("transaction_details") or ""
        return tag_dict

    def post(self, transactions: Any, tag: Any, tag_dict: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        number, written = self.failed()
        if tag.id not in (written, int(written[:2]) if written[:2].isdigit() else written[:2]):
            raise _Refused(number, f":{written}: cannot be read as MT940")
        self.done += 1
        if isinstance(tag, Statement):
            if not tag_dict.get("id"):
                raise _Refused(number, ":61: has no transaction type (such as NTRF) after its amount")
            self.in_transaction = True
            return {**result, _LINE: number}
        if isinstance(tag, TransactionDetails):
            return {**result, _DETAILS: self.details} if self.in_transaction else {}
        if not isinstance(tag, NonSwift):
            self.in_transaction = False
        return result


def _reference(data: dict[str, Any], number: int) -> str:
    """The end-to-end reference of one transaction, as written ("" when it has none)."""
    details = "".join(str(data.get(_DETAILS) or "").splitlines())
    for candidate in (data.get("end_to_end_reference"), *(_EREF.findall(details)[:1])):
        if candidate and candidate.strip() not in _NONE:
            return str(candidate).strip()
    references = [str(data.get(key) or "") for key in ("customer_reference", "extra_details")]
    written = _UUID.findall(" ".join([details, *references]))
    if len({entitlement_uuid(found) for found in written}) > 1:
        raise _Refused(number, "names more than one entitlement id and marks none as the EREF")
    if written:
        return str(written[0])
    customer = references[0].strip()
    return "" if customer in _NONE else customer


def _line(data: dict[str, Any], limits: TextLimits) -> Line:
    number = int(data[_LINE])
    currency = str(data.get("currency") or "").upper()
    if not currency:
        raise _Refused(number, "no currency: the statement's opening balance (:60F: or :60M:) comes first")
    try:
        amount = minor_units(-Decimal(data["amount"].amount), currency)
    except ValueError as exc:
        raise _Refused(number, f":61: {exc}") from None
    reference = _reference(data, number)
    bank_reference = str(data.get("bank_reference") or "").strip()
    for value in (reference, bank_reference):
        if len(value) > limits.max_field_chars:
            raise _Refused(number, f"a reference longer than {limits.max_field_chars} characters")
    return Line(
        line_no=number,
        entitlement_ref=reference,
        entitlement_id=entitlement_uuid(reference) if reference else None,
        provider_ref=None if bank_reference in _NONE else bank_reference,
        amount_minor=amount,
        currency=currency,
        value_date=date.fromordinal((data.get("entry_date") or data["date"]).toordinal()),
    )


def read_mt940(file: IO[bytes], summary: Summary, batch_size: int, limits: TextLimits) -> Iterator[list[Line]]:
    """Batches of the statement's lines; problems go to `summary.errors` (reading stops after MAX_ERRORS).

    Raises StatementError at once for a field the library cannot read."""
    summary.format = "mt940"
    batch: list[Line] = []
    for text, fields in _statements(_decode(file.read()), limits):
        tracker = _Tracker(fields)
        try:
            statement = mt940.parse(io.StringIO(text), processors=tracker.processors(), options=OPTIONS)
        except _Refused as refused:
            raise StatementError([*summary.errors, refused.where]) from None
        except Exception as exc:  # the library refuses a malformed field with RuntimeError, ValueError, decimal errors
            number, tag = tracker.failed()
            reason = _LAYOUT.get(tag, "cannot be read") if isinstance(exc, RuntimeError) else "cannot be read"
            detail = f" ({exc})" if type(exc) is ValueError else ""  # Python's date errors name no value
            raise StatementError([*summary.errors, (number, "", f":{tag}: {reason}{detail}")]) from None
        for transaction in statement.transactions:
            try:
                line = _line(transaction.data, limits)
            except _Refused as refused:
                summary.errors.append(refused.where)
                if len(summary.errors) >= MAX_ERRORS:
                    return
                continue
            if summary.lines >= MAX_LINES:
                raise StatementError([*summary.errors, (0, "", f"a statement holds at most {MAX_LINES} lines")])
            summary.add(line)
            batch.append(line)
            if len(batch) >= batch_size:
                yield batch
                batch = []
    if batch:
        yield batch
