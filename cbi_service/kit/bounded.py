"""Reading uploaded CSV text in bounded pieces, so that one huge line never sits in memory.

`csv.reader` over a file asks it for whole lines, and a file object hands over a line however long it is:
a 1 GB line without a newline would be read whole before the reader could object. Here the reader gets
lines of at most `max_record_chars` characters (`readline(limit)`), and a record (a line, or the lines of a
quoted field that spans several) longer than that is refused as soon as its characters pass the limit.
Fields are checked against `max_field_chars` as each record comes out. (`csv.field_size_limit` would do
the same for fields, but it is one setting for the whole process, shared with every other CSV reader.)
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Any, TextIO


class LimitExceeded(Exception):
    """The file is larger than the limits allow; the message says where and which limit."""


@dataclass(frozen=True, slots=True)
class TextLimits:
    max_record_chars: int
    max_field_chars: int


class _BoundedLines:
    """The lines of a text file, each at most `limit` characters, and none of a record past the limit."""

    def __init__(self, handle: TextIO, limit: int) -> None:
        self.handle = handle
        self.limit = limit
        self.record_chars = 0
        self.line = 0

    def __iter__(self) -> _BoundedLines:
        return self

    def __next__(self) -> str:
        text = self.handle.readline(self.limit + 1)
        if not text:
            raise StopIteration
        self.line += 1
        self.record_chars += len(text)
        if self.record_chars > self.limit:
            raise LimitExceeded(f"line {self.line} is longer than {self.limit} characters")
        return text


class BoundedReader:
    """`csv.reader` over `handle` whose records stay within `limits` (LimitExceeded names the first line that
    does not); `line_num` is the number of lines read so far, as the csv module counts them."""

    def __init__(self, handle: TextIO, limits: TextLimits, dialect: Any = csv.excel, **options: Any) -> None:
        self._lines = _BoundedLines(handle, limits.max_record_chars)
        self._reader = csv.reader(self._lines, dialect, **options)
        self._max_field = limits.max_field_chars

    @property
    def line_num(self) -> int:
        return self._lines.line

    def __iter__(self) -> BoundedReader:
        return self

    def __next__(self) -> list[str]:
        fields = next(self._reader)
        self._lines.record_chars = 0
        if any(len(field) > self._max_field for field in fields):
            raise LimitExceeded(f"line {self.line_num} has a field longer than {self._max_field} characters")
        return fields
