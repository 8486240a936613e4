"""Which statement a file is, told by its content (never by its name or content type), and its reader.

- XML (the first character, after a byte-order mark and blanks, is `<`): ISO 20022 camt.053 or pain.002,
  told apart by the message element (`iso20022`);
- SWIFT MT940 (`swift`): the first line opens a SWIFT block (`{1:`) or a field (`:20:`, `:25:` …), or one of
  the first lines opens the statement's `:20:` after a bank's header lines (such as `:940:` or a BIC);
- anything else: the CSV of `statement`, whose first line is its header.
Each reads into the same `Line`s, so every format is reconciled by the same code into the same categories.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Generator
from typing import IO

from cbi_service.kit.bounded import TextLimits
from cbi_service.reconciliation import statement
from cbi_service.reconciliation.iso20022 import read_iso20022
from cbi_service.reconciliation.statement import Line, Summary
from cbi_service.reconciliation.swift import read_mt940

HEAD_BYTES = 4096
HEADER_LINES = 10
_MT940_FIRST = re.compile(r"^(?:\{1:|:[0-9]{2}[A-Z]?:)")
_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def sniff(head: bytes) -> str:
    """`xml`, `mt940` or `csv`, from the first bytes of a file."""
    for bom in _BOMS:
        if head.startswith(bom):
            encoding = "utf-8" if bom == codecs.BOM_UTF8 else "utf-16"
            text = head.decode(encoding, errors="ignore")
            break
    else:
        text = head.decode("latin-1")
    text = text.lstrip("\ufeff \t\r\n")
    if text.startswith("<"):
        return "xml"
    lines = [line.strip() for line in text.splitlines() if line.strip()][:HEADER_LINES]
    if lines and (_MT940_FIRST.match(lines[0]) or any(line.startswith(":20:") for line in lines)):
        return "mt940"
    return "csv"


def read_statement(
    file: IO[bytes], summary: Summary, batch_size: int, limits: TextLimits
) -> Generator[list[Line], None, None]:
    """Batches of the statement's lines whatever its format (`summary.format` says which it was)."""
    head = file.read(HEAD_BYTES)
    file.seek(0)
    kind = sniff(head)
    if kind == "xml":
        yield from read_iso20022(file, summary, batch_size, limits)
    elif kind == "mt940":
        yield from read_mt940(file, summary, batch_size, limits)
    else:
        yield from statement.read_statement(file, summary, batch_size, limits)
