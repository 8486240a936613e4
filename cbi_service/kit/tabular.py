"""Tables of people as people save them: CSV in the encodings and separators spreadsheets write, and XLSX.

The one reader of every file of people the service takes in (bulk imports, `cbi-service registry hash`), so
that a file reads the same wherever it goes. Rows stream; no file is held whole.

**Encoding** (`detect_encoding`). Accepted: UTF-8 with or without a byte-order mark, UTF-16 with one (little-
or big-endian: Excel's "Unicode text"), and Windows-1252, which is also how Latin-1 files are read (the two
agree on every printable character; they differ only at 0x80-0x9F, control codes in Latin-1 that no text
holds). The rule, in order:

1. A byte-order mark decides: UTF-8, or UTF-16 LE or BE. The whole file must then decode, or it is refused.
2. Otherwise a file that is valid UTF-8 throughout is UTF-8 (plain ASCII is): text in a single-byte encoding
   practically never forms valid UTF-8. One holding U+FFFD, the mark an earlier bad conversion leaves where
   it lost a letter ("Mar\ufffda"), is refused: what was lost cannot be read back.
3. Otherwise the file can only be Windows-1252, and is read so when its Windows-1252 reading is clean:
   - every byte is defined in Windows-1252 (0x81, 0x8D, 0x8F, 0x90, 0x9D are not) and none is NUL (UTF-16
     without a byte-order mark);
   - no character is written in UTF-8 (a valid multi-byte sequence, "MarÃ­a" when read as Windows-1252):
     a file mixing UTF-8 with another encoding is garbled however it is read;
   - charset-normalizer, asked about Windows-1252 only, finds the text clean (mess ratio under its threshold):
     this refuses DOS code pages read as Windows ("Mar¡a") and Cyrillic or Greek ones ("Ìàðèÿ");
   - no symbol or punctuation mark stands between two letters ("Mar‡a", "Mu–oz": Mac Roman; "ŽR“c":
     Shift-JIS), no capital beyond ASCII follows a small letter ("JosŽ"), and there is no "ƒ": Mac Roman
     signs the mess ratio lets through. An apostrophe before a capital (O’Brien) is a name, not a sign.
   Anything else cannot be told apart and is refused, asking for the file to be saved as "CSV UTF-8".

Why not charset-normalizer's best guess among every encoding it knows: single-byte encodings cannot be told
apart by their bytes, only by how plausible their readings are, and on a file of Spanish names its guess is
cp1250 (Hungarian, it says), which would store "Muñoz" as "Muńoz". The question this answers instead is the
one that can be answered: is the reading in the one single-byte encoding accepted clean text? A Windows-1252
file with accented names always reads as Windows-1252. What can still pass garbled is a Mac Roman file
whose only accented letters read as letters in Windows-1252 (ú as "œ", ü as "Ÿ"), as French could have them.

**Separator**: comma, semicolon or tab, whichever splits the header row into the required columns
(quotes respected); csv.Sniffer guesses from the data rows and is wrong on names with commas.

**Dates** (`parse_date`): `YYYY-MM-DD`, or day first `DD/MM/YYYY` (`D/M/YYYY`, `.` or `-` between), or a
workbook's date cell. Never month first: `12/31/1990` is an error, not a guess.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import IO, Any

import openpyxl
from charset_normalizer import from_bytes

from cbi_service.kit.bounded import BoundedReader, LimitExceeded, TextLimits
from cbi_service.kit.settings import Settings
from cbi_service.kit.workbook import NotAWorkbook, WorkbookLimits, WorkbookRefused, check_workbook

ENCODING_NAMES = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8", "utf-16": "UTF-16", "cp1252": "Windows-1252"}
DELIMITERS = (",", ";", "\t")
DATE_MESSAGE = "must be a date as YYYY-MM-DD or DD/MM/YYYY (day first)"
# Columns read from a workbook: a lying dimension cannot make every row 16,384 cells wide.
MAX_COLUMNS = 64
SAVE_AS_UTF8 = 'save it as "CSV UTF-8" and send it again'

_BLOCK = 1 << 20
_SAMPLE_BYTES = 256 << 10
_SAMPLE_CHUNK = 4096


def _mojibake() -> re.Pattern[str]:
    """The signs of text in another encoding read as Windows-1252 (rule 3 of the module's docstring)."""
    high: dict[str, str] = {}  # the characters of 0x80-0xFF, by Unicode category
    for byte in range(0x80, 0x100):
        try:
            char = bytes([byte]).decode("cp1252")
        except UnicodeDecodeError:
            continue
        high[char] = unicodedata.category(char)

    def chars(*categories: str) -> str:
        return "".join(re.escape(c) for c, category in high.items() if category.startswith(categories))

    letters = "a-zA-Z" + chars("Lu", "Ll", "Lo")
    small = "a-z" + chars("Ll")
    # Symbols, punctuation, format characters, digits like ½ and modifiers like ˆ; the apostrophe apart.
    marks = chars("P", "S", "C", "No", "Lm").replace("\u2019", "")
    # Each alternative starts with the character it is about, so that the search skips plain text fast.
    return re.compile(
        rf"[{marks}](?<=[{letters}].)(?=[{letters}])|\u2019(?<=[{letters}].)(?=[{small}])"
        rf"|[{chars('Lu')}](?<=[{small}].)|ƒ"
    )


_MOJIBAKE = _mojibake()


class UnreadableFile(Exception):
    """The file as a whole cannot be read. The message says why in terms the person who saved it can act on,
    and never quotes the file's content (it is personal data)."""


@dataclass(frozen=True, slots=True)
class TableLimits:
    text: TextLimits
    workbook: WorkbookLimits

    @classmethod
    def of(cls, settings: Settings, *, max_rows: int | None = None) -> TableLimits:
        """The limits of Settings (see README); `max_rows` instead of `import_max_rows` if given."""
        return cls(
            text=settings.text_limits,
            workbook=WorkbookLimits(
                max_bytes=settings.xlsx_max_bytes,
                max_part_bytes=settings.xlsx_max_part_bytes,
                max_rows=settings.import_max_rows if max_rows is None else max_rows,
                max_cell_chars=settings.upload_max_cell_chars,
            ),
        )

    @property
    def max_rows(self) -> int:
        return self.workbook.max_rows


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """How a CSV file is written: its encoding (a Python codec name) and its separator."""

    encoding: str
    delimiter: str


def _blocks(stream: IO[bytes]) -> Iterator[bytes]:
    stream.seek(0)
    while block := stream.read(_BLOCK):
        yield block
    stream.seek(0)


def detect_encoding(stream: IO[bytes]) -> str:
    """The codec to read `stream` with (`utf-8-sig`, `utf-16`, `utf-8` or `cp1252`), by the rule in the module's
    docstring; UnreadableFile when the encoding cannot be told. Reads the file through and rewinds it."""
    stream.seek(0)
    head = stream.read(4)
    stream.seek(0)
    if head.startswith(codecs.BOM_UTF8):
        if (failed := _first_undecodable_line(stream, "utf-8-sig")) is not None:
            raise UnreadableFile(f"the file starts as UTF-8 (byte-order mark) but line {failed} is not UTF-8")
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        if _first_undecodable_line(stream, "utf-16") is not None:
            raise UnreadableFile("the file starts as UTF-16 (byte-order mark) but is not UTF-16 throughout")
        return "utf-16"
    if _first_undecodable_line(stream, "utf-8") is None:
        return "utf-8"
    _must_be_clean_cp1252(stream)
    return "cp1252"


def _first_undecodable_line(stream: IO[bytes], encoding: str) -> int | None:
    """The first line `encoding` cannot decode (as UTF-8 counts them), or None when the whole file decodes.
    Text holding U+FFFD, the mark of an earlier conversion that lost letters, is refused."""
    decoder = codecs.getincrementaldecoder(encoding)()
    lines = 0
    try:
        for block in _blocks(stream):
            try:
                text = decoder.decode(block)
            except UnicodeDecodeError as exc:
                return lines + block.count(b"\n", 0, max(exc.start, 0)) + 1
            if (lost := text.find("\ufffd")) >= 0:
                raise UnreadableFile(
                    f"line {lines + text.count(chr(10), 0, lost) + 1} holds the replacement character \ufffd: an "
                    "earlier conversion lost letters there, which cannot be read back; export the file again from "
                    "the original"
                )
            lines += text.count("\n")
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return lines + 1
    finally:
        stream.seek(0)
    return None


_CP1252_REFUSALS = (
    (re.compile(rb"\x00"), "holds NUL bytes (UTF-16 without a byte-order mark?)"),
    (re.compile(rb"\xef\xbf\xbd"), "holds the replacement character \ufffd (in UTF-8): letters were lost there"),
    (
        re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"),
        "is written in UTF-8 while other lines are not",
    ),
    (re.compile(rb"[\x81\x8d\x8f\x90\x9d]"), "holds bytes that are text neither in UTF-8 nor in Windows-1252"),
)


def _must_be_clean_cp1252(stream: IO[bytes]) -> None:
    lines = 0
    sample = bytearray()
    carry = b""  # the end of the previous block, so that no sign is missed across two blocks
    for block in _blocks(stream):
        joined = carry + block
        for pattern, problem in _CP1252_REFUSALS:
            if found := pattern.search(joined):
                _refuse(f"line {_line_of(lines, carry, joined, found.start())} {problem}")
        if sign := _MOJIBAKE.search(joined.decode("cp1252")):
            _refuse(f"line {_line_of(lines, carry, joined, sign.start())} reads as garbled text in Windows-1252")
        lines += block.count(b"\n")
        carry = block[-3:]
        for line in block.split(b"\n"):
            if len(sample) < _SAMPLE_BYTES and not line.isascii():
                sample += line[: _SAMPLE_BYTES - len(sample)] + b"\n"
    # The sample is what charset-normalizer can judge (the lines beyond ASCII), looked at whole.
    steps = max(1, min(len(sample) // _SAMPLE_CHUNK, _SAMPLE_BYTES // _SAMPLE_CHUNK))
    clean = from_bytes(bytes(sample), steps=steps, chunk_size=_SAMPLE_CHUNK, cp_isolation=["cp1252"]).best()
    if clean is None:
        _refuse("it reads as garbled text in Windows-1252")


def _line_of(lines: int, carry: bytes, joined: bytes, offset: int) -> int:
    """The line of `offset` in `joined` (`carry` then a block that starts after `lines` lines)."""
    return lines + joined.count(b"\n", len(carry), max(offset, len(carry))) + 1


def _refuse(problem: str) -> None:
    raise UnreadableFile(f"the file is not UTF-8 and cannot be read as Windows-1252 either: {problem}; {SAVE_AS_UTF8}")


def read_layout(stream: IO[bytes], required: Collection[str], limits: TextLimits) -> CsvLayout:
    """The encoding and separator of a CSV file whose header must hold `required`; UnreadableFile otherwise.
    Reads the file through (for the encoding) and rewinds it."""
    encoding = detect_encoding(stream)
    with text_of(stream, encoding) as handle:
        first = handle.readline(limits.max_record_chars + 1)
    stream.seek(0)
    return CsvLayout(encoding, choose_delimiter(first, required, limits))


@contextmanager
def text_of(stream: IO[bytes], encoding: str) -> Iterator[io.TextIOWrapper]:
    """A text view of a binary stream, read with `encoding`, that leaves the stream open and rewound."""
    wrapper = io.TextIOWrapper(stream, encoding=encoding, errors="strict", newline="")
    try:
        yield wrapper
    finally:
        wrapper.detach()
        stream.seek(0)


def choose_delimiter(first_line: str, required: Collection[str], limits: TextLimits) -> str:
    """The separator under which `first_line` (the header) holds every required column."""
    if len(first_line) > limits.max_record_chars:
        raise UnreadableFile(f"line 1 is longer than {limits.max_record_chars} characters")
    if not first_line.strip():
        raise UnreadableFile("the file has no header row")
    if "\x00" in first_line:
        raise UnreadableFile(f"the header row holds NUL characters (UTF-16 without a byte-order mark?); {SAVE_AS_UTF8}")
    attempts = []
    for delimiter in DELIMITERS:
        columns = _columns(next(csv.reader([first_line.rstrip("\r\n")], delimiter=delimiter), []))
        missing = set(required) - set(columns)
        if not missing:
            return delimiter
        attempts.append((len(missing), missing))
    _, missing = min(attempts, key=lambda attempt: attempt[0])
    raise UnreadableFile(
        f"missing columns: {', '.join(sorted(missing))} (the header was read with comma, semicolon and tab "
        "as the separator)"
    )


def _columns(cells: list[str]) -> list[str]:
    return [c.strip().lower() for c in cells]


def check_header(cells: list[str], required: Collection[str]) -> list[str]:
    """The column names of a header row that holds every required column, each once."""
    header = _columns(cells)
    missing = set(required) - set(header)
    if missing:
        raise UnreadableFile(f"missing columns: {', '.join(sorted(missing))}")
    named = [c for c in header if c]
    twice = sorted({c for c in named if named.count(c) > 1})
    if twice:
        raise UnreadableFile(f"columns named more than once: {', '.join(twice)}")
    return header


Row = tuple[int, dict[str, str]]


def iter_rows(path: Path, file_format: str, required: Collection[str], limits: TableLimits) -> Iterator[Row]:
    """(row number as a spreadsheet shows it, cells by column) for every non-blank data row, streamed."""
    if file_format == "xlsx":
        yield from _xlsx_rows(path, required, limits)
        return
    with path.open("rb") as raw:
        layout = read_layout(raw, required, limits.text)
    with path.open(newline="", encoding=layout.encoding, errors="strict") as handle:
        reader = _readable(BoundedReader(handle, limits.text, csv.excel, delimiter=layout.delimiter))
        header = check_header(next(reader, []), required)
        for number, cells in enumerate(reader, start=2):
            _within_rows(number, limits)
            if any(c.strip() for c in cells):
                yield number, dict(zip(header, (c.strip() for c in cells), strict=False))


def _within_rows(number: int, limits: TableLimits) -> None:
    if number > limits.max_rows + 1:
        raise UnreadableFile(f"the file has more than {limits.max_rows} rows")


def _readable(rows: Iterator[Any]) -> Iterator[Any]:
    """Rows of a reader, a file the reader cannot go on with (a NUL byte, a broken workbook) failing as a
    whole instead of being retried forever."""
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except LimitExceeded as exc:
            raise UnreadableFile(str(exc)) from exc
        except csv.Error as exc:  # the csv module's own words, which quote nothing of the file
            raise UnreadableFile(f"the file cannot be read past this point: {exc}") from exc
        except Exception as exc:  # the many kinds openpyxl raises on a damaged workbook, which may quote a cell
            raise UnreadableFile(f"the file cannot be read past this point ({type(exc).__name__})") from exc
        yield row


def open_workbook(path: Path, limits: TableLimits) -> Any:
    """The workbook, read-only, once `check_workbook` has found it within the limits."""
    try:
        check_workbook(path, limits.workbook)
    except WorkbookRefused as exc:
        raise UnreadableFile(str(exc)) from exc
    except NotAWorkbook as exc:
        raise UnreadableFile("not a readable XLSX workbook") from exc
    try:
        return openpyxl.load_workbook(path, read_only=True, data_only=True, keep_links=False)
    except Exception as exc:  # openpyxl raises many kinds for a file that is not a workbook
        raise UnreadableFile("not a readable XLSX workbook") from exc


def cell_text(value: Any) -> str:
    """A workbook cell as the text a CSV would hold; a date cell as `YYYY-MM-DD`."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _xlsx_rows(path: Path, required: Collection[str], limits: TableLimits) -> Iterator[Row]:
    workbook = open_workbook(path, limits)
    try:
        sheet = workbook.active
        if sheet is None:
            raise UnreadableFile("the workbook has no sheet")
        rows = _readable(sheet.iter_rows(values_only=True, max_col=MAX_COLUMNS))
        header = check_header([cell_text(c) for c in next(rows, ())], required)
        for number, values in enumerate(rows, start=2):
            _within_rows(number, limits)
            cells = [cell_text(v) for v in values]
            if any(len(c) > limits.text.max_field_chars for c in cells):
                raise UnreadableFile(f"row {number} has a cell longer than {limits.text.max_field_chars} characters")
            if any(cells):
                yield number, dict(zip(header, cells, strict=False))
    finally:
        workbook.close()


def count_rows(path: Path, file_format: str, required: Collection[str], limits: TableLimits) -> int | None:
    """The data rows of a file (a workbook's as its dimension says); a file over the limits fails here."""
    if file_format == "xlsx":
        workbook = open_workbook(path, limits)
        try:
            sheet = workbook.active
            return min(max((sheet.max_row or 1) - 1, 0), limits.max_rows) if sheet is not None else None
        finally:
            workbook.close()
    return sum(1 for _ in iter_rows(path, file_format, required, limits))


_ISO = re.compile(r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})")
_DAY_FIRST = re.compile(r"([0-9]{1,2})([/.-])([0-9]{1,2})\2([0-9]{4})")


def parse_date(text: str) -> date:
    """A date as `YYYY-MM-DD` or day first (`DD/MM/YYYY`, `D/M/YYYY`, with `/`, `.` or `-`); ValueError with
    DATE_MESSAGE otherwise. A month-first date such as 12/31/1990 is an error, never swapped into place."""
    text = text.strip()
    if found := _ISO.fullmatch(text):
        year, month, day = found[1], found[2], found[3]
    elif found := _DAY_FIRST.fullmatch(text):
        day, month, year = found[1], found[3], found[4]
    else:
        raise ValueError(DATE_MESSAGE)
    try:
        return date(int(year), int(month), int(day))
    except ValueError:
        raise ValueError(DATE_MESSAGE) from None
