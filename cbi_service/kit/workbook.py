"""Refusing a workbook that would cost more memory than the limits allow, before openpyxl reads it.

An XLSX file is a zip of XML parts. openpyxl in read-only mode streams the worksheet, but reads the other
parts whole (the shared strings into a list, styles, the workbook and the relationships into trees), and
holds each text and tag of the worksheet whole while it parses it. A megabyte of zip can unpack to
gigabytes. So, before openpyxl opens a file:

1. From the zip's directory (cheap; done at upload too): at most MAX_MEMBERS members, at most
   `xlsx_max_bytes` unpacked in all, no member over 1 MiB unpacking to more than MAX_RATIO times its packed
   size, the shared strings at most `xlsx_max_part_bytes`, each other part openpyxl reads whole at most
   MAX_WHOLE_PART_BYTES. zipfile stops reading a member at its declared size (and then fails its CRC), so
   what these checks see is what openpyxl can get.
2. Streaming each XML part once, in blocks: UTF-8 only, no comments, CDATA, document types or processing
   instructions (beyond the XML declaration), no stretch of the token limit (16 bytes per character of
   `upload_max_cell_chars`) without a `<`, which bounds every text and every tag; in a worksheet, at most
   `import_max_rows` + 1 rows and no row (from its start to the next row's) over MAX_ROW_BYTES.
"""

from __future__ import annotations

import posixpath
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from openpyxl.packaging.manifest import Manifest
from openpyxl.packaging.relationship import get_dependents, get_rels_path
from openpyxl.xml.constants import (
    ARC_CONTENT_TYPES,
    ARC_CORE,
    ARC_CUSTOM,
    ARC_ROOT_RELS,
    ARC_STYLE,
    ARC_THEME,
    ARC_WORKBOOK,
    SHARED_STRINGS,
    XLSM,
    XLSX,
    XLTM,
    XLTX,
)
from openpyxl.xml.functions import fromstring

MAX_MEMBERS = 1_000
MAX_RATIO = 100
RATIO_FROM_BYTES = 1 << 20
MAX_WHOLE_PART_BYTES = 4 << 20
MAX_ROW_BYTES = 1 << 20
_WINDOWS_PER_BLOCK = 16
_UTF8_BOM = b"\xef\xbb\xbf"
_ROW_START = re.compile(rb"<(?:[A-Za-z_][\w.-]{0,31}:)?row[\s/>]")
_ROW_CARRY = 40


class NotAWorkbook(Exception):
    """The file is not a workbook openpyxl could open (its own error will say more)."""


class WorkbookRefused(Exception):
    """The workbook is over a limit; the message says which, in terms a registrar can act on."""


@dataclass(frozen=True, slots=True)
class WorkbookLimits:
    max_bytes: int
    max_part_bytes: int
    max_rows: int
    max_cell_chars: int

    @property
    def token_bytes(self) -> int:
        return 16 * self.max_cell_chars


@dataclass(frozen=True, slots=True)
class _Parts:
    whole: dict[str, int]  # what openpyxl reads whole, and the most each may unpack to
    streamed: frozenset[str]  # worksheets


def check_archive(file: Path | IO[bytes], limits: WorkbookLimits) -> None:
    """Step 1 alone: what the zip's directory and its few small parts tell."""
    with _open(file) as archive:
        _check_directory(archive, limits)


def check_workbook(path: Path, limits: WorkbookLimits) -> None:
    """Steps 1 and 2; afterwards openpyxl can read the file within the limits."""
    with _open(path) as archive:
        parts = _check_directory(archive, limits)
        for info in archive.infolist():
            _scan(archive, info, limits, worksheet=info.filename in parts.streamed)


def _open(file: Path | IO[bytes]) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise NotAWorkbook(str(exc)) from exc


def _check_directory(archive: zipfile.ZipFile, limits: WorkbookLimits) -> _Parts:
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise WorkbookRefused(f"the workbook has more than {MAX_MEMBERS} parts")
    if sum(i.file_size for i in infos) > limits.max_bytes:
        raise WorkbookRefused(f"the workbook unpacks to more than {limits.max_bytes >> 20} MiB")
    for info in infos:
        if info.file_size > RATIO_FROM_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise WorkbookRefused(f"{info.filename} unpacks to more than {MAX_RATIO} times its size")
    parts = _parts(archive, limits)
    for info in infos:
        limit = parts.whole.get(info.filename)
        if limit is not None and info.file_size > limit:
            raise WorkbookRefused(f"{info.filename} unpacks to more than {limit >> 20} MiB")
    return parts


def _small_part(archive: zipfile.ZipFile, name: str, limits: WorkbookLimits) -> bytes:
    """A part this module parses itself to learn the workbook's layout, once it is known to be harmless."""
    info = archive.getinfo(name)
    if info.file_size > MAX_WHOLE_PART_BYTES:
        raise WorkbookRefused(f"{name} unpacks to more than {MAX_WHOLE_PART_BYTES >> 20} MiB")
    _scan(archive, info, limits, worksheet=False)
    return archive.read(info)


def _parts(archive: zipfile.ZipFile, limits: WorkbookLimits) -> _Parts:
    """Which parts openpyxl (read-only) reads whole and which it streams, as its reader decides it."""
    names = set(archive.namelist())
    try:
        manifest = Manifest.from_tree(fromstring(_small_part(archive, ARC_CONTENT_TYPES, limits)))
    except WorkbookRefused:
        raise
    except Exception as exc:  # missing or malformed: openpyxl will refuse the file with its own message
        raise NotAWorkbook(str(exc)) from exc
    whole = dict.fromkeys(
        {ARC_CONTENT_TYPES, ARC_ROOT_RELS, ARC_STYLE, ARC_THEME, ARC_CORE, ARC_CUSTOM}
        | {name for name in names if name.endswith(".rels")},
        MAX_WHOLE_PART_BYTES,
    )
    strings = manifest.find(SHARED_STRINGS)
    if strings is not None:
        whole[strings.PartName[1:]] = limits.max_part_bytes
    workbook = next((p.PartName[1:] for t in (XLTM, XLTX, XLSM, XLSX) if (p := manifest.find(t))), ARC_WORKBOOK)
    whole.setdefault(workbook, MAX_WHOLE_PART_BYTES)
    sheets: set[str] = set()
    rels_name = get_rels_path(workbook)
    if rels_name in names:
        try:
            _small_part(archive, rels_name, limits)
            relationships = get_dependents(archive, rels_name)
        except WorkbookRefused:
            raise
        except Exception as exc:
            raise NotAWorkbook(str(exc)) from exc
        for rel in relationships:
            if rel.TargetMode == "External":
                continue
            if posixpath.basename(rel.Type or "") == "worksheet":
                sheets.add(rel.target)
            else:
                whole.setdefault(rel.target, MAX_WHOLE_PART_BYTES)
    return _Parts(whole=whole, streamed=frozenset(sheets - set(whole)))


def _xml_start(head: bytes) -> int | None:
    """Where the markup of an XML part starts, or None if the member is not XML (openpyxl would fail on
    its first byte); a part in another encoding than UTF-8 is refused."""
    body = head[len(_UTF8_BOM) :] if head.startswith(_UTF8_BOM) else head
    if body[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in body[:4]:
        raise WorkbookRefused("the workbook's XML is not UTF-8")
    stripped = body.lstrip(b" \t\r\n")
    if stripped and not stripped.startswith(b"<"):
        return None
    return len(head) - len(stripped)


def _scan(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: WorkbookLimits, *, worksheet: bool) -> None:
    window = limits.token_bytes
    block_size = window * _WINDOWS_PER_BLOCK
    name = info.filename
    with archive.open(info) as stream:
        block = stream.read(block_size)
        start = _xml_start(block)
        if start is None:
            return
        declaration = start if block.startswith(b"<?xml", start) else -1
        offset = 0  # of `block` in the part
        previous = b""
        rows = counted_until = last_row = 0
        while block:
            if b"\x00" in block:
                raise WorkbookRefused(f"{name} holds NUL bytes")
            for marker in (b"<!", b"<?"):
                found = block.find(marker)
                if marker == b"<?" and offset + found == declaration:
                    found = block.find(marker, found + 1)
                if found >= 0 or (previous.endswith(b"<") and block.startswith(marker[1:])):
                    raise WorkbookRefused(f"{name} holds comments, CDATA, a DTD or processing instructions")
            for at in range(0, len(block) - window + 1, window):
                if block.find(b"<", at, at + window) < 0:
                    raise WorkbookRefused(
                        f"{name} holds a cell or tag of more than {window} bytes "
                        f"(a cell may hold {limits.max_cell_chars} characters)"
                    )
            if worksheet:
                base = offset - len(previous[-_ROW_CARRY:])
                for match in _ROW_START.finditer(previous[-_ROW_CARRY:] + block):
                    row_at = base + match.start()
                    if row_at < counted_until:
                        continue
                    rows += 1
                    if rows > limits.max_rows + 1:
                        raise WorkbookRefused(f"the worksheet has more than {limits.max_rows} rows")
                    if row_at - last_row > MAX_ROW_BYTES:
                        raise WorkbookRefused(f"{name} has a row of more than {MAX_ROW_BYTES >> 20} MiB")
                    last_row, counted_until = row_at, base + match.end()
            previous = block
            offset += len(block)
            block = stream.read(block_size)
        if worksheet and offset - last_row > MAX_ROW_BYTES:
            raise WorkbookRefused(f"{name} has more than {MAX_ROW_BYTES >> 20} MiB outside its rows")
