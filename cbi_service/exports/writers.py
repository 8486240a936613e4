"""Render the export as CSV, Parquet or XLSX bytes, in memory bounded by one block whatever the size.

CSV is PostgreSQL's own COPY output, passed through. Parquet is made from that same CSV by Arrow's C++
reader and writer and goes out one row group at a time, drained from an in-memory sink. XLSX rows come
from a server-side cursor into XlsxWriter's constant-memory mode, which spools each sheet to disk; a
workbook is a zip whose directory comes last, so it is built in a temporary folder and streamed once
complete.
Encoding runs in worker threads so a long export does not stall the event loop serving other requests.
pyarrow is imported on first use: some 35 MB a service that never exports Parquet need not carry.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import functools
import io
import os
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import xlsxwriter
from sqlalchemy.ext.asyncio import AsyncEngine
from xlsxwriter.format import Format
from xlsxwriter.worksheet import Worksheet

from cbi_service.exports.repository import ExportQuery, copy_csv, fetch_batches
from cbi_service.exports.rows import COLUMNS, SPREADSHEET_TEXT_COLUMNS
from cbi_service.kit.cells import ESCAPE

if TYPE_CHECKING:
    import pyarrow as pa
    import pyarrow.parquet as pq

RowBatches = AsyncGenerator[Sequence[Any], None]

FILE_CHUNK = 1 << 20
PARQUET_BLOCK_BYTES = 1 << 19
PARQUET_GROUP_ROWS = 8_000
#: Columns with few distinct values; the others (ids, hashes) would only grow a dictionary to throw away.
PARQUET_DICTIONARY_COLUMNS = ["kind", "phase", "description", "account_code", "currency"]
#: Rows of an XLSX sheet after its header; Excel stops at 1,048,576 rows, so a larger export continues on
#: further sheets ("entries 2", ...), each with the header again.
XLSX_SHEET_ROWS = 1_048_575


class ExportFormat(enum.StrEnum):
    csv = "csv"
    parquet = "parquet"
    xlsx = "xlsx"


MEDIA_TYPES = {
    ExportFormat.csv: "text/csv; charset=utf-8",
    ExportFormat.parquet: "application/vnd.apache.parquet",
    ExportFormat.xlsx: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def render(fmt: ExportFormat, engine: AsyncEngine, query: ExportQuery) -> AsyncIterator[bytes]:
    """CSV and XLSX are opened in spreadsheets: their text is neutralised (`kit.cells`); Parquet's is not."""
    if fmt is ExportFormat.csv:
        return copy_csv(engine, dataclasses.replace(query, for_spreadsheets=True))
    if fmt is ExportFormat.parquet:
        return write_parquet(copy_csv(engine, query))
    return write_xlsx(fetch_batches(engine, dataclasses.replace(query, for_spreadsheets=True)))


# --------------------------------------------------------------------------------------------- Parquet


@functools.cache
def parquet_schema() -> pa.Schema:
    """Typed columns: `posted_at` a UTC timestamp (µs), integers as int32/int64, everything else text."""
    import pyarrow as pa

    typed = {
        "posted_at": pa.timestamp("us", tz="UTC"),
        "chain": pa.int32(),
        "seq": pa.int64(),
        "entry": pa.int32(),
        "amount_minor": pa.int64(),
    }
    return pa.schema([(name, typed.get(name, pa.string())) for name in COLUMNS])


class _Sink(io.RawIOBase):
    """A write-only file for ParquetWriter whose bytes are taken out (and forgotten) after each row group."""

    def __init__(self) -> None:
        super().__init__()
        self._buffer = bytearray()
        self._position = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._buffer += view
        self._position += view.nbytes
        return view.nbytes

    def tell(self) -> int:
        return self._position

    def drain(self) -> bytes:
        out = bytes(self._buffer)
        self._buffer.clear()
        return out


def _row_boundary(buffer: bytearray) -> int:
    """Length of the longest prefix made of whole CSV records (0 if none).

    A newline ends a record unless it sits inside a quoted field, i.e. after an odd number of quote
    characters (a quote inside a quoted field is doubled, which keeps the parity).
    """
    end = len(buffer)
    while (newline := buffer.rfind(b"\n", 0, end)) >= 0:
        if buffer.count(b'"', 0, newline) % 2 == 0:
            return newline + 1
        end = newline
    return 0


def _parse_block(block: bytes) -> pa.Table:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    schema = parquet_schema()
    return pacsv.read_csv(
        pa.BufferReader(block),
        read_options=pacsv.ReadOptions(column_names=list(COLUMNS), use_threads=False),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        # COPY writes NULL as an empty unquoted field and an empty string as "": keep them apart.
        convert_options=pacsv.ConvertOptions(
            column_types=dict(zip(schema.names, schema.types, strict=True)),
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )


def _write_group(writer: pq.ParquetWriter, sink: _Sink, tables: list[pa.Table]) -> bytes:
    import pyarrow as pa

    group = pa.concat_tables(tables)
    if group.num_rows:
        writer.write_table(group, row_group_size=group.num_rows)
    # Hand the group's buffers back to the system: the allocator would otherwise keep its high-water mark.
    pa.default_memory_pool().release_unused()
    return sink.drain()


async def write_parquet(csv_chunks: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    """Parquet (zstd) made from the CSV export by Arrow's own CSV reader: no row becomes Python objects.

    COPY's output is cut at record boundaries into blocks of about PARQUET_BLOCK_BYTES (the CSV parser's
    working memory grows with its input, so blocks stay small); parsed blocks are gathered into row groups
    of PARQUET_GROUP_ROWS. All of it runs on one thread of the export's own: Arrow's allocator keeps a
    heap per thread, and the shared pool's threads would multiply what it holds.
    """
    import pyarrow.parquet as pq

    loop = asyncio.get_running_loop()
    sink = _Sink()
    writer = pq.ParquetWriter(sink, parquet_schema(), compression="zstd", use_dictionary=PARQUET_DICTIONARY_COLUMNS)
    buffer = bytearray()
    header = True
    tables: list[pa.Table] = []
    rows = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-export") as thread:
        async with contextlib.aclosing(csv_chunks):
            async for chunk in csv_chunks:
                buffer += chunk
                if header and (end := buffer.find(b"\n")) >= 0:
                    del buffer[: end + 1]  # COPY's header line: the schema names the columns
                    header = False
                if len(buffer) < PARQUET_BLOCK_BYTES or not (cut := _row_boundary(buffer)):
                    continue
                block = bytes(memoryview(buffer)[:cut])
                del buffer[:cut]
                tables.append(await loop.run_in_executor(thread, _parse_block, block))
                rows += tables[-1].num_rows
                if rows >= PARQUET_GROUP_ROWS:
                    yield await loop.run_in_executor(thread, _write_group, writer, sink, tables)
                    tables, rows = [], 0
        if buffer:
            tables.append(await loop.run_in_executor(thread, _parse_block, bytes(buffer)))
        if tables:
            yield await loop.run_in_executor(thread, _write_group, writer, sink, tables)
        await loop.run_in_executor(thread, writer.close)
    yield sink.drain()


# ------------------------------------------------------------------------------------------------ XLSX

#: Excel keeps 15 significant digits: an integer of more (a ledger amount is a BIGINT) goes out as text, and
#: its `amount` with it, so that no digit is ever rounded away.
XLSX_EXACT_BELOW = 10**15
_NUMBER_COLUMNS = ("chain", "seq", "entry", "amount", "amount_minor")
_TEXT_COLUMNS = tuple(i for i, name in enumerate(COLUMNS) if name not in _NUMBER_COLUMNS)
_SPREADSHEET_TEXT = frozenset(COLUMNS.index(name) for name in SPREADSHEET_TEXT_COLUMNS)
_INTEGER_COLUMNS = tuple(COLUMNS.index(name) for name in _NUMBER_COLUMNS[:3])
_AMOUNT = COLUMNS.index("amount")
_AMOUNT_MINOR = COLUMNS.index("amount_minor")
_WIDTHS = {"transaction_id": 37, "related_id": 37, "key": 24, "description": 30, "references": 30, "posted_at": 28}
_WIDTHS |= {"prev_hash": 66, "hash": 66, "account_code": 30, "amount": 16, "amount_minor": 16}


def _xlsx_text(column: int, value: str) -> str:
    """XlsxWriter (constant-memory mode) copies a text of the form `<r>…</r>` into the sheet as rich-text
    markup, unescaped; such a text in the neutralised columns gets the escape `'` (`kit.cells`), which
    `ledger verify` removes. The other text columns (ids, digests, JSON, times) never start with `<`."""
    if column in _SPREADSHEET_TEXT and value.startswith("<r>") and value.endswith("</r>"):
        return ESCAPE + value
    return value


class _XlsxBook:
    """An XlsxWriter workbook in constant-memory mode: each row is written to its sheet's temporary file as
    soon as the next one begins, so memory holds one row whatever the export's size."""

    def __init__(self, path: str, tmpdir: str) -> None:
        self.book = xlsxwriter.Workbook(path, {"constant_memory": True, "tmpdir": tmpdir})
        self.book.use_zip64()  # a sheet of a million long rows can pass the 4 GiB a plain zip member allows
        self.header = self.book.add_format({"bold": True})
        self.integer = self.book.add_format({"num_format": "0"})
        self.amount_formats: dict[int, Format] = {}
        self.sheets: list[Worksheet] = []
        self.sheet = self._add_sheet()
        self.row = 1

    def _add_sheet(self) -> Worksheet:
        number = len(self.sheets) + 1
        sheet = self.book.add_worksheet("entries" if number == 1 else f"entries {number}")
        for column, name in enumerate(COLUMNS):
            sheet.set_column(column, column, _WIDTHS.get(name, 12))
            sheet.write_string(0, column, name, self.header)
        sheet.freeze_panes(1, 0)
        self.sheets.append(sheet)
        return sheet

    def _amount_format(self, amount: str) -> Format:
        """`#,##0.00` with as many decimals as the currency has (as the decimal text from the database)."""
        point = amount.find(".")
        digits = 0 if point < 0 else len(amount) - point - 1
        found = self.amount_formats.get(digits)
        if found is None:
            pattern = "#,##0" + ("." + "0" * digits if digits else "")
            found = self.amount_formats[digits] = self.book.add_format({"num_format": pattern})
        return found

    def append(self, rows: Sequence[Sequence[Any]]) -> None:
        for values in rows:
            if self.row > XLSX_SHEET_ROWS:
                self._finish_sheet()
                self.sheet, self.row = self._add_sheet(), 1
            sheet, row = self.sheet, self.row
            for column in _TEXT_COLUMNS:
                if text := values[column]:  # NULL and '' alike leave the cell empty: a spreadsheet has no ''
                    sheet.write_string(row, column, _xlsx_text(column, text))
            for column in _INTEGER_COLUMNS:
                number = values[column]
                if -XLSX_EXACT_BELOW < number < XLSX_EXACT_BELOW:
                    sheet.write_number(row, column, number, self.integer)
                else:
                    sheet.write_string(row, column, str(number))
            amount, minor = values[_AMOUNT], values[_AMOUNT_MINOR]
            if -XLSX_EXACT_BELOW < minor < XLSX_EXACT_BELOW:
                # At most 15 significant digits: the nearest double shows (and reads back as) this decimal.
                sheet.write_number(row, _AMOUNT, float(amount), self._amount_format(amount))
                sheet.write_number(row, _AMOUNT_MINOR, minor, self.integer)
            else:
                sheet.write_string(row, _AMOUNT, amount)
                sheet.write_string(row, _AMOUNT_MINOR, str(minor))
            self.row += 1

    def _finish_sheet(self) -> None:
        self.sheet.autofilter(0, 0, self.row - 1, len(COLUMNS) - 1)

    def close(self) -> None:
        self._finish_sheet()
        self.book.close()


def _read_chunk(file: io.BufferedReader) -> bytes:
    return file.read(FILE_CHUNK)


async def write_xlsx(batches: RowBatches) -> AsyncIterator[bytes]:
    """Sheet "entries" (then "entries 2", … past Excel's row limit): a bold header row frozen above an
    autofilter over the data; ids, digests, times and text as text; `chain`, `seq`, `entry` and
    `amount_minor` as integers and `amount` as a number shown with the currency's decimals, exact (see
    `XLSX_EXACT_BELOW`).

    A zip's directory comes last and a sheet's dimension first, so the workbook is built in a temporary
    folder and streamed once complete. One thread of the export's own builds it, a batch at a time, while
    the next batch is read from the database.
    """
    loop = asyncio.get_running_loop()
    with (
        tempfile.TemporaryDirectory(prefix="cbi-ledger-export-") as folder,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="xlsx-export") as thread,
    ):
        path = os.path.join(folder, "export.xlsx")
        book = await loop.run_in_executor(thread, _XlsxBook, path, folder)
        writing: asyncio.Future[None] | None = None
        async with contextlib.aclosing(batches):
            async for rows in batches:
                if writing is not None:
                    await writing
                writing = loop.run_in_executor(thread, book.append, rows)
        if writing is not None:
            await writing
        await loop.run_in_executor(thread, book.close)
        with open(path, "rb") as file:  # noqa: ASYNC230 - each read runs in the thread below
            while chunk := await loop.run_in_executor(thread, _read_chunk, file):
                yield chunk
