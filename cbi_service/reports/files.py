"""The 5W as the files partners upload to R4V: CSV with the template's header, and XLSX laid out like R4V's
template (its sheet name, header row and column widths), each with an optional HXL hashtag row under the
header.

Cells hold what `service.five_w_cells` made: text, integers, the USD value as a Decimal (written as the
number it is, never through a float) and None for an empty cell. Text a spreadsheet would evaluate is
neutralised (`kit.cells`), in the CSV and the workbook alike; characters XML cannot hold are written as
OOXML's `_xHHHH_` escapes, which spreadsheets read back as the character.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill

from cbi_service.kit.cells import SafeWriter, neutralise
from cbi_service.reports import r4v

XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# What an XML 1.0 document cannot hold (openpyxl refuses a cell holding one).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _lines(rows: Sequence[Mapping[str, Any]], hxl: bool) -> list[list[Any]]:
    lines: list[list[Any]] = [list(r4v.HEADER)]
    if hxl:
        lines.append([r4v.HXL[c] for c in r4v.HEADER])
    lines.extend([row[c] for c in r4v.HEADER] for row in rows)
    return lines


def five_w_csv(rows: Sequence[Mapping[str, Any]], *, hxl: bool) -> str:
    out = io.StringIO()
    SafeWriter(out).writerows(_lines(rows, hxl))
    return out.getvalue()


def _cell(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    return _NOT_XML.sub(lambda m: f"_x{ord(m.group()):04X}_", neutralise(value))


def five_w_xlsx(rows: Sequence[Mapping[str, Any]], *, hxl: bool) -> bytes:
    """One sheet named as R4V's: the header in the template's style (bold, light on dark blue, centred and
    wrapped, 30 points high), the template's column widths, then the rows."""
    workbook = Workbook()
    sheet = workbook.active
    assert sheet is not None  # a new workbook has its sheet
    sheet.title = r4v.SHEET_NAME
    for index, line in enumerate(_lines(rows, hxl), start=1):
        for column, value in enumerate(line, start=1):
            sheet.cell(row=index, column=column, value=_cell(value))
    header_font = Font(name="Calibri", size=11, bold=True, color=r4v.HEADER_FONT)
    header_fill = PatternFill(fill_type="solid", fgColor=r4v.HEADER_FILL)
    header_alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
    for cell in sheet[1]:
        cell.font, cell.fill, cell.alignment = header_font, header_fill, header_alignment
    sheet.row_dimensions[1].height = r4v.HEADER_ROW_HEIGHT
    for column, width in enumerate(r4v.COLUMN_WIDTHS, start=1):
        sheet.column_dimensions[sheet.cell(row=1, column=column).column_letter].width = width
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()
