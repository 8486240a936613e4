"""`cbi-service ledger verify`: accepts an untouched export and names the first bad line of a tampered one.

Line numbers are the file's own: the header is line 1 and the funding transaction's description holds a
newline, so its two rows take two lines each; from the third row on, row i (0-based) starts at line i + 4.
Transactions by row: funding 0-1, then two-entry payments 2-3, 4-5, 6-7, 8-9, 10-11, ... (one stripe, in
sequence).
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cbi_service.cli import app
from cbi_service.exports import writers
from cbi_service.exports.rows import COLUMNS
from tests.exports.support import populate

Record = dict[str, str]


def line_of(index: int) -> int:
    assert index >= 2
    return index + 4


async def _export(client, api_key_factory, **params: str) -> bytes:
    response = await client.get("/v1/ledger/export", params=params, headers=await api_key_factory("auditor"))
    assert response.status_code == 200, response.text
    return response.content


@pytest.fixture
async def records(client, api_key_factory, engine) -> list[Record]:
    await populate(engine)
    return list(csv.DictReader(io.StringIO((await _export(client, api_key_factory)).decode(), newline="")))


def write_csv(path: Path, rows: list[Record]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def verify(path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["ledger", "verify", *args, str(path)])
    return result.exit_code, result.output


def shifted(row: Record, delta: int) -> Record:
    """The row with its amount moved by `delta` minor units, both columns agreeing (COP has 2 digits)."""
    minor = int(row["amount_minor"]) + delta
    whole, cents = divmod(abs(minor), 100)
    return row | {"amount_minor": str(minor), "amount": f"{'-' if minor < 0 else ''}{whole}.{cents:02d}"}


def test_untouched_export_verifies(records, tmp_path):
    code, output = verify(write_csv(tmp_path / "ledger.csv", records))
    assert code == 0, output
    assert f"OK, {len(records)} entries in 16 balanced transactions" in output
    assert "every chain stripe from its first transaction" in output


def test_the_exported_bytes_verify_offline_in_a_process_without_a_database(records, tmp_path):
    path = write_csv(tmp_path / "ledger.csv", records)
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CBI_DATABASE_URL"}}
    env["CBI_DATA_DIR"] = str(tmp_path / "no-database-here")
    done = subprocess.run(
        [sys.executable, "-m", "cbi_service", "ledger", "verify", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "no-database-here").exists()


def test_amount_changed_in_one_column_names_its_line(records, tmp_path):
    records[5] = records[5] | {"amount_minor": str(int(records[5]["amount_minor"]) + 1)}
    code, output = verify(write_csv(tmp_path / "t.csv", records))
    assert code == 1
    assert f"line {line_of(5)} " in output
    assert "does not equal amount_minor" in output


def test_amount_changed_in_both_columns_unbalances_its_transaction(records, tmp_path):
    records[5] = shifted(records[5], 100)
    code, output = verify(write_csv(tmp_path / "t.csv", records))
    assert code == 1
    assert f"line {line_of(4)} (transaction {records[4]['transaction_id']})" in output
    assert "does not sum to zero in COP" in output


def test_amounts_changed_but_balanced_break_the_hash(records, tmp_path):
    records[4], records[5] = shifted(records[4], -100), shifted(records[5], 100)
    code, output = verify(write_csv(tmp_path / "t.csv", records))
    assert code == 1
    assert f"line {line_of(4)} " in output
    assert "hash mismatch" in output


def test_row_deleted(records, tmp_path):
    del records[6]
    code, output = verify(write_csv(tmp_path / "t.csv", records))
    assert code == 1
    assert f"line {line_of(6)} " in output


def test_whole_transaction_deleted_breaks_the_chain(records, tmp_path):
    del records[6:8]
    code, output = verify(write_csv(tmp_path / "t.csv", records))
    assert code == 1
    assert f"line {line_of(6)} " in output
    assert "broken" in output


def test_row_inserted(records, tmp_path):
    records.insert(9, records[8])
    code, output = verify(write_csv(tmp_path / "t.csv", records))
    assert code == 1
    assert f"line {line_of(8)} " in output
    assert "does not sum to zero" in output


def test_forged_transaction_inserted(records, tmp_path):
    forged_id = "0190f1c2-0000-7000-8000-000000000001"
    records[10:10] = [row | {"transaction_id": forged_id, "key": "forged"} for row in records[8:10]]
    code, output = verify(write_csv(tmp_path / "t.csv", records))
    assert code == 1
    assert f"line {line_of(10)} " in output
    assert "hash mismatch" in output


def test_rows_swapped_across_transactions(records, tmp_path):
    records[9], records[10] = records[10], records[9]
    code, output = verify(write_csv(tmp_path / "t.csv", records))
    assert code == 1
    assert f"line {line_of(8)} " in output


def test_transactions_swapped_within_a_stripe(records, tmp_path):
    records[6:10] = records[8:10] + records[6:8]
    code, output = verify(write_csv(tmp_path / "t.csv", records))
    assert code == 1
    assert f"line {line_of(6)} " in output
    assert "broken" in output


async def test_partial_export_verifies_from_its_first_previous_hash(client, api_key_factory, engine, tmp_path):
    book = await populate(engine)
    content = await _export(client, api_key_factory, **{"from": book.posted_at(9).isoformat()})
    path = tmp_path / "window.csv"
    path.write_bytes(content)
    code, output = verify(path)
    assert code == 0, output
    assert "partial" in output

    # The window opens with a hold (stripe 2), its posting (stripe 0), a second hold (stripe 1) and that
    # hold's void (stripe 2, rows 6-7): without the void, stripe 2 breaks at its next transaction, the
    # second funding (rows 8-9 after the deletion, line 12: this window has no multi-line field).
    rows = list(csv.DictReader(io.StringIO(content.decode(), newline="")))
    del rows[6:8]
    code, output = verify(write_csv(tmp_path / "window-tampered.csv", rows))
    assert code == 1
    assert "line 12 " in output
    assert "chain 2 broken" in output


async def test_parquet_export_verifies_and_names_the_tampered_row(client, api_key_factory, engine, tmp_path):
    await populate(engine)
    path = tmp_path / "ledger.parquet"
    path.write_bytes(await _export(client, api_key_factory, format="parquet"))
    assert verify(path)[0] == 0

    table = pq.read_table(path)
    amounts = table.column("amount_minor").to_pylist()
    amounts[5] += 1
    index = table.schema.get_field_index("amount_minor")
    pq.write_table(table.set_column(index, "amount_minor", pa.array(amounts, pa.int64())), path)
    code, output = verify(path)
    assert code == 1
    assert "row 6 " in output


async def test_xlsx_export_verifies_and_names_the_sheet_and_row_of_a_tampered_cell(
    client, api_key_factory, engine, tmp_path, monkeypatch
):
    monkeypatch.setattr(writers, "XLSX_SHEET_ROWS", 10)
    await populate(engine)
    path = tmp_path / "ledger.xlsx"
    path.write_bytes(await _export(client, api_key_factory, format="xlsx"))
    code, output = verify(path)
    assert code == 0, output
    assert "OK, 32 entries in 16 balanced transactions" in output

    # Rows 12-13 of the export (0-based), one two-entry payment, are the second sheet's rows 4-5 (its
    # header is row 1). O is `amount`, Q `amount_minor`.
    book = openpyxl.load_workbook(path)
    sheet = book["entries 2"]
    sheet["Q5"] = sheet["Q5"].value + 1
    book.save(path)
    code, output = verify(path)
    assert code == 1
    assert "row 5 of sheet entries 2 " in output
    assert "does not equal amount_minor" in output

    sheet["O5"] = round(sheet["O5"].value + 0.01, 2)
    sheet["O4"], sheet["Q4"] = round(sheet["O4"].value - 0.01, 2), sheet["Q4"].value - 1
    book.save(path)
    code, output = verify(path)
    assert code == 1
    assert "row 4 of sheet entries 2 " in output
    assert "hash mismatch" in output


async def test_foreign_files_are_refused(tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("entitlement_id,amount\n1,2\n")
    code, output = verify(other)
    assert code == 2
    assert "columns missing" in output

    not_a_workbook = tmp_path / "other.xlsx"
    with zipfile.ZipFile(not_a_workbook, "w") as archive:
        archive.writestr("hello.txt", "hello")
    code, output = verify(not_a_workbook)
    assert code == 2
    assert "not an XLSX workbook" in output


async def test_an_xlsx_whose_sheet_declares_entities_is_refused_unparsed(client, api_key_factory, engine, tmp_path):
    await populate(engine)
    export = tmp_path / "ledger.xlsx"
    export.write_bytes(await _export(client, api_key_factory, format="xlsx"))
    bomb = tmp_path / "bomb.xlsx"
    laughs = '<!DOCTYPE w [<!ENTITY a "hahahahaha"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    with zipfile.ZipFile(export) as original, zipfile.ZipFile(bomb, "w") as forged:
        for item in original.infolist():
            content = original.read(item)
            if item.filename == "xl/worksheets/sheet1.xml":
                declaration, rest = content.decode().split("\n", 1)
                content = f"{declaration}\n{laughs}{rest.replace('<v>1</v>', '<v>&b;</v>', 1)}".encode()
            forged.writestr(item, content)
    code, output = verify(bomb)
    assert code == 2
    assert "a DTD, a comment or no XML before its root" in output


#: Text XML cannot carry, text that looks like OOXML's own escapes or rich-text markup, spreadsheet
#: triggers, surrounding whitespace: each must come back from the XLSX exactly as the ledger hashed it.
TRICKY = [
    "ctrl \x01\x08\x0b\x1f end",
    "_x0041_ stays _x005F_ literal",
    "<r><t>rich?</t></r>",
    "  spaces around  ",
    "cr\rlf\nand\r\nboth",
    "\ttab first",
    "=1+1",
    "-1+1",
    "'quoted",
    "@at",
    "non-characters \ufffe\uffff, emoji 🧾, ñandú",
    "& < > \" '",
]


async def test_an_xlsx_export_with_tricky_text_verifies(client, api_key_factory, engine, tmp_path):
    from ledger import EntrySpec, Ledger, TransactionSpec

    async with engine.begin() as conn:
        ledger = Ledger(conn)
        for n, text in enumerate(TRICKY):
            source = await ledger.create_account(f"{text} {n}", "COP", "asset")
            target = await ledger.create_account(f"{n} {text}", "COP", "liability")
            await ledger.post(
                TransactionSpec(
                    key=text if n else f"{text} key",
                    kind=text,
                    entries=[EntrySpec(source.id, -(n + 1) * 101), EntrySpec(target.id, (n + 1) * 101)],
                    references={text: text},
                    description=text,
                )
            )
    path = tmp_path / "tricky.xlsx"
    path.write_bytes(await _export(client, api_key_factory, format="xlsx"))
    code, output = verify(path)
    assert code == 0, output
    assert f"{2 * len(TRICKY)} entries in {len(TRICKY)} balanced transactions" in output

    sheet = openpyxl.load_workbook(path)["entries"]
    assert all(cell.data_type != "f" for row in sheet.iter_rows() for cell in row)
    assert sheet.max_row == 2 * len(TRICKY) + 1  # the rich-text look-alike did not swallow or add cells


async def test_an_export_whose_text_starts_like_a_formula_is_neutralised_and_verifies(
    client, api_key_factory, engine, tmp_path
):
    from ledger import EntrySpec, Ledger, TransactionSpec

    async with engine.begin() as conn:
        ledger = Ledger(conn)
        source = await ledger.create_account("=HYPERLINK(1)", "COP", "asset")
        target = await ledger.create_account("'quoted", "COP", "liability")
        await ledger.post(
            TransactionSpec(
                key="=1+1",
                entries=[EntrySpec(source.id, -15_000), EntrySpec(target.id, 15_000)],
                references={"reference": "=2+2"},
                description="@SUM(1+1)",
            )
        )
    content = await _export(client, api_key_factory)
    rows = list(csv.DictReader(io.StringIO(content.decode(), newline="")))
    assert {(r["key"], r["description"], r["account_code"], r["amount"]) for r in rows} == {
        ("'=1+1", "'@SUM(1+1)", "'=HYPERLINK(1)", "-150.00"),
        ("'=1+1", "'@SUM(1+1)", "''quoted", "150.00"),
    }
    path = tmp_path / "formulas.csv"
    path.write_bytes(content)
    code, output = verify(path)
    assert code == 0, output

    book = openpyxl.load_workbook(io.BytesIO(await _export(client, api_key_factory, format="xlsx")))
    cells = [cell for row in book["entries"].iter_rows(min_row=2) for cell in row]
    assert {c.value for c in cells if c.column_letter == "B"} == {"'=1+1"}
    assert all(c.data_type != "f" for c in cells)
