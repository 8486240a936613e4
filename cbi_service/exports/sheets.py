"""The rows of an XLSX workbook, sheet after sheet, streamed for `ledger verify`.

A worksheet is read with the C XML parser one `<row>` at a time and each row is dropped once read, so a
sheet of a million rows costs the memory of one (a general reader builds objects per cell and takes
minutes where this takes seconds). Shared strings, which a workbook saved by a spreadsheet uses, are read
into memory first. Values come as the file holds them: text as text (OOXML's `_xHHHH_` escapes left for
the caller), numbers as `int` when written without a point or exponent and `float` otherwise, booleans
as `bool`, errors as their text, and an absent or empty cell as None.

The file is the auditor's and may come from anywhere: a part whose prolog holds a DTD (which no
workbook needs, and which entity-expansion attacks require) or a comment is refused before it is parsed.
"""

from __future__ import annotations

import functools
import posixpath
import re
import zipfile
from collections.abc import Iterator
from typing import IO, Literal, cast
from xml.etree.ElementTree import Element, XMLPullParser

MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
RELATIONSHIPS = "{http://schemas.openxmlformats.org/package/2006/relationships}"
OFFICE_RELATIONSHIP_ID = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
SHARED_STRINGS_TYPE = "/sharedStrings"
_COLUMN = re.compile(r"[A-Z]+")
#: The XML declaration and processing instructions that may precede the root element, and its start.
_PROLOG = re.compile(rb"^(?:\xef\xbb\xbf)?(?:\s|<\?[^>]*\?>)*<[A-Za-z_]")
PROLOG_BYTES = 1 << 16
CHUNK = 1 << 16

Value = str | int | float | bool | None
Event = Literal["start", "end"]


class NotAWorkbook(Exception):
    """The file is not an XLSX workbook this reader understands."""


def _text(element: Element) -> str:
    """The text of a string item (`<si>` or `<is>`): its `<t>`, or its runs' `<t>`, without phonetic hints."""
    direct = element.find(f"{MAIN}t")
    if direct is not None:
        return direct.text or ""
    return "".join(run.findtext(f"{MAIN}t") or "" for run in element.iterfind(f"{MAIN}r"))


@functools.lru_cache(maxsize=4096)
def _column_of(letters: str) -> int:
    if not _COLUMN.fullmatch(letters):
        raise ValueError(f"bad cell reference {letters!r}")
    index = 0
    for letter in letters:
        index = index * 26 + ord(letter) - 64
    return index - 1


def _column(reference: str) -> int:
    """0-based column of a cell reference such as `AB12`."""
    return _column_of(reference.rstrip("0123456789"))


def _number(text: str) -> int | float:
    if "." in text or "E" in text or "e" in text or text in {"inf", "-inf", "nan"}:
        return float(text)
    return int(text)


class Workbook:
    """An open workbook: `sheets` in the workbook's order as (name, part), rows by `rows(part)`."""

    def __init__(self, file: IO[bytes]) -> None:
        try:
            self.archive = zipfile.ZipFile(file)
            self.sheets = self._sheets()
            self.shared = self._shared_strings()
        except (zipfile.BadZipFile, KeyError, SyntaxError, ValueError) as exc:
            raise NotAWorkbook(str(exc)) from None

    def _relationships(self) -> dict[str, tuple[str, str]]:
        """The workbook's relationships: id → (type, part name in the archive)."""
        root = self._parse("xl/_rels/workbook.xml.rels")
        found = {}
        for rel in root.iter(f"{RELATIONSHIPS}Relationship"):
            target = rel.get("Target", "")
            part = target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join("xl", target))
            found[rel.get("Id", "")] = (rel.get("Type", ""), part)
        return found

    def _parse(self, name: str) -> Element:
        """A small part (the workbook, its relationships) parsed whole."""
        root: Element | None = None
        for event, element in self._events(name, ("start",)):
            if event == "start" and root is None:
                root = element
        if root is None:
            raise ValueError(f"{name} is empty")
        return root

    def _events(self, name: str, events: tuple[Event, ...]) -> Iterator[tuple[str, Element]]:
        """The parser's events over a part, read in chunks; a prolog with a DTD or comment is refused."""
        with self.archive.open(name) as stream:
            head = stream.read(PROLOG_BYTES)
            if not _PROLOG.match(head):
                raise ValueError(f"{name}: not a workbook part (a DTD, a comment or no XML before its root)")
            # No DTD (checked above), hence no entity to expand.
            parser: XMLPullParser[Element] = XMLPullParser(events)
            chunk = head
            while chunk:
                parser.feed(chunk)
                yield from cast(Iterator[tuple[str, Element]], parser.read_events())
                chunk = stream.read(CHUNK)
            parser.close()
            yield from cast(Iterator[tuple[str, Element]], parser.read_events())

    def _sheets(self) -> list[tuple[str, str]]:
        self._rels = relationships = self._relationships()
        workbook = self._parse("xl/workbook.xml")
        sheets = []
        for sheet in workbook.iter(f"{MAIN}sheet"):
            kind, part = relationships[sheet.get(OFFICE_RELATIONSHIP_ID, "")]
            if kind.endswith("/worksheet"):
                sheets.append((sheet.get("name", ""), part))
        return sheets

    def _shared_strings(self) -> list[str]:
        parts = [part for kind, part in self._rels.values() if kind.endswith(SHARED_STRINGS_TYPE)]
        if not parts:
            return []
        strings = []
        for _, element in self._events(parts[0], ("end",)):
            if element.tag == f"{MAIN}si":
                strings.append(_text(element))
                element.clear()
        return strings

    def rows(self, part: str) -> Iterator[tuple[int, list[Value]]]:
        """(1-based row number, cell values by column) for each row the sheet holds, in order."""
        try:
            parent: Element | None = None
            number = 0
            for event, element in self._events(part, ("start", "end")):
                if event == "start":
                    if element.tag == f"{MAIN}sheetData":
                        parent = element
                    continue
                if element.tag != f"{MAIN}row":
                    continue
                number = int(element.get("r", number + 1))
                yield number, self._cells(element)
                if parent is not None:
                    parent.clear()  # the row just read is its only child: memory stays at one row
        except (IndexError, KeyError, SyntaxError, ValueError, zipfile.BadZipFile) as exc:
            raise NotAWorkbook(f"{part}: {exc}") from None

    def _cells(self, row: Element) -> list[Value]:
        values: list[Value] = []
        for cell in row.iterfind(f"{MAIN}c"):
            reference = cell.get("r")
            column = _column(reference) if reference else len(values)
            values.extend([None] * (column - len(values) + 1))
            values[column] = self._value(cell)
        return values

    def _value(self, cell: Element) -> Value:
        kind = cell.get("t", "n")
        if kind == "inlineStr":
            inline = cell.find(f"{MAIN}is")
            return None if inline is None else _text(inline)
        raw = cell.findtext(f"{MAIN}v")
        if raw is None or raw == "":
            return None
        if kind == "s":
            return self.shared[int(raw)]
        if kind in {"str", "e"}:
            return raw
        if kind == "b":
            return raw == "1"
        return _number(raw)

    def close(self) -> None:
        self.archive.close()
