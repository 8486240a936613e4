"""Cells for spreadsheets: text a spreadsheet would evaluate is written so that it stays text.

A cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return (OWASP's CSV injection list) or
with a line feed is a formula to Excel, LibreOffice and Google Sheets, whoever typed it. Such a cell is
written with a leading apostrophe, which every spreadsheet shows as the text that follows. So that a reader
can undo it unambiguously (`restore`), a cell that already starts with an apostrophe gets one more.

A plain negative decimal (`-150.00`, `-3`) is a number, not a formula: it is written as it is, so that
amounts stay numbers. Anything else after a `-` (`-1+1`, `-A1`) is neutralised.

CSV writers here also quote every text field, so that a spreadsheet splitting fields on `;` or tab (as
some locales do) never sees a field begin in the middle of another.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import Any

ESCAPE = "'"
TRIGGERS = frozenset("=+-@\t\r\n" + ESCAPE)
_NEGATIVE_NUMBER = re.compile(r"-[0-9]+(?:\.[0-9]+)?")


def neutralise(text: str) -> str:
    """The text as a spreadsheet must receive it."""
    if text[:1] in TRIGGERS and not _NEGATIVE_NUMBER.fullmatch(text):
        return ESCAPE + text
    return text


def restore(text: str) -> str:
    """The text that `neutralise` was given (a reader of a file this service wrote)."""
    return text[1:] if text.startswith(ESCAPE) else text


def safe_row(values: Iterable[Any]) -> list[Any]:
    return [neutralise(v) if isinstance(v, str) else v for v in values]


class SafeWriter:
    """`csv.writer` whose text cells are neutralised and quoted; numbers are written as numbers."""

    def __init__(self, out: Any) -> None:
        self._writer = csv.writer(out, quoting=csv.QUOTE_NONNUMERIC)

    def writerow(self, row: Iterable[Any]) -> None:
        self._writer.writerow(safe_row("" if v is None else v for v in row))

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


def neutralised_sql(expression: str) -> str:
    """`neutralise` in SQL, for text PostgreSQL renders itself (COPY); the tests hold the two to agree."""
    return (
        f"CASE WHEN left({expression}, 1) IN ('=', '+', '-', '@', E'\\t', E'\\r', E'\\n', '''')"
        f" AND {expression} !~ '^-[0-9]+(\\.[0-9]+)?$' THEN '''' || {expression} ELSE {expression} END"
    )
