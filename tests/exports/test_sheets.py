"""The XLSX reader `ledger verify` uses: a damaged workbook is "not a workbook", never a crash."""

from __future__ import annotations

import io
import re
import zipfile

import pytest
import xlsxwriter

from cbi_service.exports.sheets import NotAWorkbook, Workbook


def _workbook_pointing_past_its_shared_strings() -> io.BytesIO:
    written = io.BytesIO()
    book = xlsxwriter.Workbook(written)
    book.add_worksheet("entries").write_string(0, 0, "tx_id")
    book.close()
    damaged = io.BytesIO()
    with zipfile.ZipFile(written) as source, zipfile.ZipFile(damaged, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                data, count = re.subn(rb'(t="s"><v>)0(</v>)', rb"\g<1>99\g<2>", data)
                assert count == 1
            target.writestr(item, data)
    damaged.seek(0)
    return damaged


def test_a_cell_naming_a_shared_string_that_is_not_there_is_not_a_workbook():
    workbook = Workbook(_workbook_pointing_past_its_shared_strings())
    ((_, part),) = workbook.sheets

    with pytest.raises(NotAWorkbook):
        list(workbook.rows(part))
