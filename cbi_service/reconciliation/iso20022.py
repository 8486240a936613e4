"""ISO 20022 statements: camt.053 (bank-to-customer statement) and pain.002 (customer payment status report).

Told apart by the message under `Document` (`BkToCstmrStmt`, `CstmrPmtStsRpt`) in any version of its
namespace (`urn:iso:std:iso:20022:tech:xsd:camt.053.001.02` … `.13`, `pain.002.001.03` … `.14`, or none),
also inside an envelope (a business application header beside the `Document`). Read with lxml as a stream,
one entry or transaction at a time, so memory stays flat however long the statement; no DTD, no entity,
nothing fetched from the network.

What a line is, and what it says (the entitlement id is always the `EndToEndId` the payment carried; ISO
20022 allows it 35 characters, so the UUID is often written without hyphens, and both forms are read):
- camt.053: every booked entry (`Ntry/Sts` `BOOK`; pending, information-only and future entries have not
  moved money and are no line) gives a line per `NtryDtls/TxDtls`, or one line for an entry without
  details. Amount: `TxDtls/Amt` (`AmtDtls/TxAmt/Amt` in .02), or the entry's `Amt` when it holds one
  transaction; an entry holding several needs each one's amount. A debit (`CdtDbtInd` `DBIT`, the
  transaction's or else the entry's) is money paid out, a positive amount; a credit is money coming back (a
  return), a negative one. Date: `BookgDt`, else `ValDt` (a time is taken as its UTC day when it states an
  offset, as written otherwise). `provider_ref`: `TxDtls/Refs/AcctSvcrRef`.
- pain.002: every `TxInfAndSts` whose status (`TxSts`, else its `PmtInfSts`, else the `GrpSts`) says the
  money moved: `ACSC` (settlement completed, the debtor's account debited) or `ACCC` (the creditor's
  account credited). Any other status (received, pending, accepted at an earlier stage — `ACTC`, `ACCP`,
  `ACFC`, `ACSP`, `ACWC`, `ACWP` —, rejected, cancelled, blocked) has not paid anything: it is no line, and
  an entitlement the ledger shows disbursed that the report does not confirm is missing_in_statement.
  Amount: `OrgnlTxRef/Amt/InstdAmt`. Date: `OrgnlTxRef/IntrBkSttlmDt`, else `AccptncDtTm`, else
  `OrgnlTxRef/ReqdExctnDt`, else the report's `GrpHdr/CreDtTm`. `provider_ref`: `AcctSvcrRef`.
Amounts are ISO 20022 decimals in the currency's major unit (`Ccy`), made integer minor units exactly.

A line's number is its transaction's position in the document (1 for the first `TxDtls`, entry without
details or `TxInfAndSts`, counting those that are no line), so every line has its own even when the whole
document is one text line. Problems name the element by its path (`Document/BkToCstmrStmt/Stmt[1]/Ntry[3]
/NtryDtls[1]/TxDtls[2]/Amt`) and its line in the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import IO, Any

from lxml import etree

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

MESSAGES = {"BkToCstmrStmt": "camt.053", "CstmrPmtStsRpt": "pain.002"}
PAID = frozenset({"ACSC", "ACCC"})
BOOKED = "BOOK"
_NAMESPACE = re.compile(r"(?:^|:)(camt\.053|pain\.002)\.001\.[0-9]{2}$")
#: Elements that repeat: their path names which one ([1] the first).
_REPEATED = frozenset({"Stmt", "Ntry", "NtryDtls", "TxDtls", "OrgnlPmtInfAndSts", "TxInfAndSts"})
_AMOUNT = re.compile(r"^[0-9]{1,18}(?:\.[0-9]{1,18})?$")  # ASCII digits only; the sign is CdtDbtInd's
_DATE = re.compile(r"^([0-9]{4}-[0-9]{2}-[0-9]{2})(?:Z|[+-][0-9]{2}:[0-9]{2})?$")
_STATUS = re.compile(r"^[A-Z]{4}$")
_SAFE = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "huge_tree": False,
    "remove_comments": True,
    "remove_pis": True,
}


class _Problem(Exception):
    """One element of one transaction is wrong: (its line in the file, its path, what is wrong)."""

    def __init__(self, line: int, path: str, message: str) -> None:
        super().__init__(message)
        self.where = (line, path, f"{path}: {message}")


class _Path:
    """The open elements from the root down, each numbered among its same-named siblings as it starts."""

    def __init__(self) -> None:
        self.open: list[tuple[str, int, dict[str, int]]] = []

    def start(self, name: str) -> None:
        siblings = self.open[-1][2] if self.open else {}
        siblings[name] = index = siblings.get(name, 0) + 1
        self.open.append((name, index, {}))

    def end(self) -> None:
        self.open.pop()

    def name(self, up: int = 0) -> str:
        return self.open[-1 - up][0] if len(self.open) > up else ""

    def names(self, depth: int) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.open[-depth:])

    def text(self, up: int = 0) -> str:
        shown = self.open[: len(self.open) - up]
        return "/".join(f"{name}[{index}]" if name in _REPEATED else name for name, index, _ in shown)


class _Names:
    """Element names in the document's namespace, built once each."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.built: dict[str, str] = {}

    def __call__(self, local: str) -> str:
        found = self.built.get(local)
        if found is None:
            found = self.built[local] = f"{{{self.namespace}}}{local}" if self.namespace else local
        return found


class _Record:
    """An element being read (an entry, a transaction), with the document's names and its path."""

    def __init__(self, element: Any, names: _Names, path: str) -> None:
        self.element = element
        self.names = names
        self.path = path

    def find(self, steps: str) -> Any:
        """The first element at the child path `steps` (local names, `/` between), or None."""
        found = self.element
        for step in steps.split("/"):
            found = next(found.iterchildren(self.names(step)), None)
            if found is None:
                return None
        return found

    def text(self, steps: str) -> str | None:
        found = self.find(steps)
        if found is None:
            return None
        return (found.text or "").strip() or None

    def problem(self, steps: str, message: str) -> _Problem:
        found = self.find(steps) if steps else self.element
        line = (found if found is not None else self.element).sourceline or 0
        return _Problem(line, f"{self.path}/{steps}" if steps else self.path, message)

    def amount(self, steps: str) -> tuple[int, str] | None:
        """(minor units, currency) of an amount element with its `Ccy`; None when it is absent."""
        found = self.find(steps)
        if found is None:
            return None
        currency = (found.get("Ccy") or "").strip().upper()
        if len(currency) != 3:
            raise self.problem(steps, "needs its currency (Ccy) as an ISO 4217 code")
        text = (found.text or "").strip()
        if not _AMOUNT.match(text):
            raise self.problem(steps, "not a decimal amount (digits, a '.' before the decimals, no sign)")
        try:
            return minor_units(Decimal(text), currency), currency
        except ValueError as exc:
            raise self.problem(steps, str(exc)) from None

    def day(self, steps: str) -> date | None:
        """A date (`…Dt`) or time (`…DtTm`) element, or a `Dt`/`DtTm` choice: its day (a time with an offset
        as its UTC day, as written without one)."""
        found = self.find(steps)
        if found is None:
            return None
        for choice, is_time in (("Dt", False), ("DtTm", True)):
            inner = next(found.iterchildren(self.names(choice)), None)
            if inner is not None:
                return self.day_of(f"{steps}/{choice}", (inner.text or "").strip(), is_time)
        return self.day_of(steps, (found.text or "").strip(), steps.endswith("DtTm"))

    def day_of(self, steps: str, text: str, is_time: bool) -> date:
        try:
            if not is_time:
                match = _DATE.match(text)
                if match is None:
                    raise ValueError(text)
                return date.fromisoformat(match.group(1))
            moment = datetime.fromisoformat(text)
            return moment.astimezone(UTC).date() if moment.tzinfo else moment.date()
        except (ValueError, OverflowError):
            kind = "date and time (YYYY-MM-DDThh:mm:ss)" if is_time else "date (YYYY-MM-DD)"
            raise self.problem(steps, f"not an ISO 8601 {kind}") from None


def _reference(record: _Record, steps: str, limits: TextLimits) -> str | None:
    value = record.text(steps)
    if value is not None and len(value) > limits.max_field_chars:
        raise record.problem(steps, f"longer than {limits.max_field_chars} characters")
    return value


def _line(position: int, reference: str | None, amount: tuple[int, str], on: date, provider_ref: str | None) -> Line:
    ref = reference or ""
    return Line(
        line_no=position,
        entitlement_ref=ref,
        entitlement_id=entitlement_uuid(ref) if ref else None,
        provider_ref=provider_ref,
        amount_minor=amount[0],
        currency=amount[1],
        value_date=on,
    )


@dataclass
class _Entry:
    """What a booked entry says for all its transactions, read when its details start (they come last)."""

    on: date
    sign: int
    amount: tuple[int, str]


@dataclass
class _Waiting:
    """An entry's first transaction without an amount of its own: the entry's, if it stays its only one."""

    position: int
    reference: str | None
    provider_ref: str | None
    sign: int
    unpriced: _Problem


Found = list[Line | _Problem]


class _Camt053:
    """Each `TxDtls` as its end arrives (then dropped, so a batch entry of any size costs no memory), with
    what its `Ntry` says; an entry without details as the entry ends."""

    record = "Ntry"
    dropped = frozenset({"TxDtls"})

    def __init__(self, names: _Names, limits: TextLimits, summary: Summary) -> None:
        self.names = names
        self.limits = limits
        self.summary = summary
        self.position = 0
        #: What the open entry says: a booked entry's `_Entry`, another entry's status, or why it cannot be read.
        self.entry: _Entry | str | _Problem | None = None
        self.transactions = 0
        self.waiting: _Waiting | None = None

    @staticmethod
    def opaque(name: str, path: _Path) -> bool:
        """A transaction, and an entry's other parts: read whole, what is in them needs no events."""
        parent = path.name(1)
        return (
            name == "TxDtls" or (parent == "Ntry" and name != "NtryDtls") or (parent == "NtryDtls" and name != "TxDtls")
        )

    def start(self, name: str, element: Any, path: _Path) -> Found:
        if name == "Ntry":
            self.entry, self.transactions, self.waiting = None, 0, None
        elif name == "NtryDtls" and path.name(1) == "Ntry" and self.entry is None:
            return self.read_entry(_Record(element.getparent(), self.names, path.text(1)))
        return []

    def end(self, name: str, element: Any, path: _Path) -> Found:
        if name == "TxDtls" and path.name(2) == "Ntry":
            return self.transaction(_Record(element, self.names, path.text()))
        if name == "Ntry":
            return self.close(_Record(element, self.names, path.text()))
        return []

    def read_entry(self, entry: _Record) -> Found:
        try:
            status = entry.text("Sts/Cd") or entry.text("Sts/Prtry") or entry.text("Sts")
            if status is None:
                raise entry.problem("Sts", "missing: the entry's status (BOOK, PDNG, INFO)")
            if status != BOOKED:
                self.entry = status
                return []
            on = entry.day("BookgDt") or entry.day("ValDt")
            if on is None:
                raise entry.problem("", "has neither a booking date (BookgDt) nor a value date (ValDt)")
            sign = self.sign(entry, None)
            amount = entry.amount("Amt")
            if amount is None:
                raise entry.problem("Amt", "missing: the entry's amount")
            self.entry = _Entry(on, sign, amount)
        except _Problem as problem:
            self.entry = problem
            return [problem]
        return []

    def transaction(self, tx: _Record) -> Found:
        self.position += 1
        self.transactions += 1
        entry = self.entry
        if isinstance(entry, str):
            self.summary.skipped += 1
        if not isinstance(entry, _Entry):
            return []
        found: Found = []
        if self.waiting is not None:
            found.append(self.waiting.unpriced)
            self.waiting = None
        unpriced = "needs its amount (Amt): the entry holds several transactions"
        try:
            amount = tx.amount("Amt") or tx.amount("AmtDtls/TxAmt/Amt")
            reference = _reference(tx, "Refs/EndToEndId", self.limits)
            provider_ref = _reference(tx, "Refs/AcctSvcrRef", self.limits)
            sign = self.sign(tx, entry.sign)
            if amount is None and self.transactions == 1:
                self.waiting = _Waiting(self.position, reference, provider_ref, sign, tx.problem("", unpriced))
            elif amount is None:
                raise tx.problem("", unpriced)
            else:
                found.append(_line(self.position, reference, (sign * amount[0], amount[1]), entry.on, provider_ref))
        except _Problem as problem:
            found.append(problem)
        return found

    def close(self, entry_record: _Record) -> Found:
        found = self.read_entry(entry_record) if self.entry is None else []
        entry, waiting = self.entry, self.waiting
        if self.transactions == 0:
            self.position += 1
            if isinstance(entry, str):
                self.summary.skipped += 1
        if not isinstance(entry, _Entry):
            return found
        if self.transactions == 0:
            found.append(_line(self.position, None, (entry.sign * entry.amount[0], entry.amount[1]), entry.on, None))
        elif waiting is not None:
            amount = (waiting.sign * entry.amount[0], entry.amount[1])
            found.append(_line(waiting.position, waiting.reference, amount, entry.on, waiting.provider_ref))
        return found

    @staticmethod
    def sign(record: _Record, default: int | None) -> int:
        """+1 for a debit (paid out), -1 for a credit (come back); a transaction may inherit its entry's."""
        indicator = record.text("CdtDbtInd")
        if indicator is None and default is not None:
            return default
        if indicator not in ("DBIT", "CRDT"):
            raise record.problem("CdtDbtInd", "must be DBIT or CRDT")
        return 1 if indicator == "DBIT" else -1


class _Pain002:
    """Each `TxInfAndSts` as its end arrives, with the statuses and the date it may inherit."""

    record = "TxInfAndSts"
    dropped: frozenset[str] = frozenset()

    def __init__(self, names: _Names, limits: TextLimits, summary: Summary) -> None:
        self.names = names
        self.limits = limits
        self.summary = summary
        self.position = 0
        self.created: date | None = None
        self.group_status: str | None = None
        self.payment_status: str | None = None

    @staticmethod
    def opaque(name: str, path: _Path) -> bool:
        return name == "TxInfAndSts"

    def start(self, name: str, element: Any, path: _Path) -> Found:
        if name == "OrgnlPmtInfAndSts":
            self.payment_status = None
        return []

    def end(self, name: str, element: Any, path: _Path) -> Found:
        if name == "TxInfAndSts":
            return self.transaction(_Record(element, self.names, path.text()))
        names = path.names(3)
        if names[-2:] not in (
            ("GrpHdr", "CreDtTm"),
            ("OrgnlGrpInfAndSts", "GrpSts"),
            ("OrgnlPmtInfAndSts", "PmtInfSts"),
        ):
            return []
        record = _Record(element, self.names, path.text())
        try:
            if names == ("CstmrPmtStsRpt", "GrpHdr", "CreDtTm"):
                self.created = record.day_of("", (element.text or "").strip(), True)
            elif names[-1] == "GrpSts":
                self.group_status = self.status(record)
            elif names[-1] == "PmtInfSts":
                self.payment_status = self.status(record)
        except _Problem as problem:
            return [problem]
        return []

    @staticmethod
    def status(record: _Record) -> str:
        text = (record.element.text or "").strip()
        if not _STATUS.match(text):
            raise record.problem("", "not a status code (four capital letters, such as ACSC or RJCT)")
        return text

    def transaction(self, tx: _Record) -> Found:
        self.position += 1
        try:
            own = tx.find("TxSts")
            status = self.status(_Record(own, self.names, f"{tx.path}/TxSts")) if own is not None else None
            status = status or self.payment_status or self.group_status
            if status is None or status == "PART":
                raise tx.problem("", "has no TxSts, and no PmtInfSts or GrpSts that says it for every transaction")
            if status not in PAID:
                self.summary.skipped += 1
                return []
            amount = tx.amount("OrgnlTxRef/Amt/InstdAmt")
            if amount is None:
                raise tx.problem("", "has no amount (OrgnlTxRef/Amt/InstdAmt) to reconcile")
            on = (
                tx.day("OrgnlTxRef/IntrBkSttlmDt")
                or tx.day("AccptncDtTm")
                or tx.day("OrgnlTxRef/ReqdExctnDt")
                or self.created
            )
            if on is None:
                raise tx.problem("", "has no date, and the report no GrpHdr/CreDtTm")
            reference = _reference(tx, "OrgnlEndToEndId", self.limits)
            return [_line(self.position, reference, amount, on, _reference(tx, "AcctSvcrRef", self.limits))]
        except _Problem as problem:
            return [problem]


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _message(element: Any, path: _Path) -> str:
    """The format of the message element `element` (under a `Document`), or StatementError."""
    name = _local(element.tag)
    namespace = element.tag.rpartition("}")[0].lstrip("{")
    kind = MESSAGES.get(name)
    found = _NAMESPACE.search(namespace)
    if kind is None or (namespace and (found is None or found.group(1) != kind)):
        what = f"{name} in {namespace}" if namespace else name
        where = path.text()
        raise StatementError(
            [
                (
                    element.sourceline or 0,
                    where,
                    f"{where}: {what} is neither a camt.053 statement (BkToCstmrStmt) nor a pain.002 payment "
                    "status report (CstmrPmtStsRpt)",
                )
            ]
        )
    return kind


def read_iso20022(file: IO[bytes], summary: Summary, batch_size: int, limits: TextLimits) -> Iterator[list[Line]]:
    """Batches of the statement's lines; problems go to `summary.errors` (reading stops after MAX_ERRORS).

    Raises StatementError at once for a document that is not well-formed XML, has a DTD, or is neither
    message."""
    path = _Path()
    reader: _Camt053 | _Pain002 | None = None
    inside = 0  # open record elements: what is in them is read when they end, and dropped only then
    opaque = 0  # depth in an element read whole: the events of what is in it are skipped
    batch: list[Line] = []
    events = etree.iterparse(file, events=("start", "end"), **_SAFE)
    try:
        for event, element in events:
            if opaque > 1 or (opaque == 1 and event == "start"):
                opaque += 1 if event == "start" else -1
                continue
            name = _local(element.tag)
            if event == "start":
                if not path.open and element.getroottree().docinfo.doctype:
                    raise StatementError([(element.sourceline or 0, "", "a statement may not have a DOCTYPE")])
                path.start(name)
                found: Found = []
                if reader is not None:
                    inside += name == reader.record
                    found = reader.start(name, element, path)
                    opaque = int(reader.opaque(name, path))
                elif path.name(1) == "Document":
                    summary.format = _message(element, path)
                    names = _Names(element.tag.rpartition("}")[0].lstrip("{"))
                    reader = (_Camt053 if summary.format == "camt.053" else _Pain002)(names, limits, summary)
            else:
                opaque = 0
                found = reader.end(name, element, path) if reader is not None else []
                path.end()
                if reader is not None and name == reader.record:
                    inside -= 1
                if not inside or (reader is not None and name in reader.dropped):
                    # Read: drop it and its finished siblings, so memory stays flat.
                    element.clear()
                    while element.getprevious() is not None:
                        del element.getparent()[0]
            for item in found:
                if isinstance(item, _Problem):
                    summary.errors.append(item.where)
                    continue
                if summary.lines >= MAX_LINES:
                    raise StatementError([*summary.errors, (0, "", f"a statement holds at most {MAX_LINES} lines")])
                summary.add(item)
                batch.append(item)
            if len(summary.errors) >= MAX_ERRORS:
                break
            if len(batch) >= batch_size:
                yield batch
                batch = []
        if reader is None and not summary.errors:
            raise StatementError([(0, "", "an XML file, but no ISO 20022 Document with a camt.053 or pain.002")])
        if batch:
            yield batch
    except etree.LxmlError as exc:
        # libxml2 names the elements and lines involved; it stops before handing over the events of the
        # text around the fault, so the open elements here would not say where it is.
        line = getattr(exc, "lineno", 0) or 0
        message = getattr(exc, "msg", None) or str(exc)
        raise StatementError([*summary.errors, (line, "", f"not well-formed XML: {message}")]) from None
