"""Render the export as CSV, Parquet or XLSX bytes, in memory bounded by one block whatever the size.

CSV is PostgreSQL's own COPY output, passed through. Parquet is made from that same CSV by Arrow's C++
reader and writer and goes out one row group at a time, drained from an in-memory sink. XLSX rows come
from a server-side cursor; a workbook is a zip whose directory comes last, so it is written to a
temporary file (openpyxl's write-only mode also spools the sheet to disk) and streamed once complete.
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

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.worksheet._write_only import WriteOnlyWorksheet
from sqlalchemy.ext.asyncio import AsyncEngine

from cbi_service.exports.repository import ExportQuery, copy_csv, fetch_batches
from cbi_service.exports.rows import COLUMNS

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


def _cell(sheet: WriteOnlyWorksheet, value: Any) -> Any:
    """Strings as text, never formulas; characters XML cannot carry become U+FFFD (XLSX is for reading:
    verify the CSV or Parquet export)."""
    if isinstance(value, str):
        if ILLEGAL_CHARACTERS_RE.search(value):
            value = ILLEGAL_CHARACTERS_RE.sub("\ufffd", value)
        if value.startswith("="):
            cell = WriteOnlyCell(sheet, value)
            cell.data_type = "s"
            return cell
    return value


class _XlsxBook:
    def __init__(self) -> None:
        self.book = Workbook(write_only=True)
        self.sheet: WriteOnlyWorksheet | None = None
        self.sheets = 0
        self.rows_in_sheet = XLSX_SHEET_ROWS

    def append(self, rows: Sequence[Any]) -> None:
        for row in rows:
            sheet = self.ensure_sheet()
            sheet.append([_cell(sheet, value) for value in row])
            self.rows_in_sheet += 1

    def ensure_sheet(self) -> WriteOnlyWorksheet:
        if self.sheet is None or self.rows_in_sheet >= XLSX_SHEET_ROWS:
            self.sheets += 1
            self.sheet = self.book.create_sheet("entries" if self.sheets == 1 else f"entries {self.sheets}")
            self.sheet.append(COLUMNS)
            self.rows_in_sheet = 0
        return self.sheet


def _read_chunk(file: io.BufferedReader) -> bytes:
    return file.read(FILE_CHUNK)


async def write_xlsx(batches: RowBatches) -> AsyncIterator[bytes]:
    """One sheet "entries" (more past Excel's row limit); numbers as numbers, everything else as text."""
    book = _XlsxBook()
    handle, path = tempfile.mkstemp(prefix="cbi-ledger-export-", suffix=".xlsx")
    os.close(handle)
    try:
        book.ensure_sheet()
        async with contextlib.aclosing(batches):
            async for rows in batches:
                await asyncio.to_thread(book.append, rows)
        await asyncio.to_thread(book.book.save, path)
        with open(path, "rb") as file:  # noqa: ASYNC230 - each read runs in a thread below
            while chunk := await asyncio.to_thread(_read_chunk, file):
                yield chunk
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
