"""The ledger export: every format opens in its own library and adds up to the ledger's balances."""

from __future__ import annotations

import csv
import io
import json
import tempfile
import uuid
import zipfile
from collections import Counter
from decimal import Decimal

import openpyxl
import pyarrow.parquet as pq
import pytest

from cbi_service.accounting.service import programme_balances
from cbi_service.exports import writers
from cbi_service.exports.repository import ExportQuery
from cbi_service.exports.rows import COLUMNS
from cbi_service.exports.verify import verify_file
from cbi_service.exports.writers import _row_boundary, parquet_schema
from cbi_service.programmes.service import get_programme
from ledger import EntrySpec, Ledger, TransactionSpec
from ledger.verify import EXPORT_COLUMNS
from tests.exports.support import AWKWARD_DESCRIPTION, populate
from tests.reconciliation.support import enrol, funded_programme, issue, register, released_batch
from tests.support import assert_problem, make_actors

BALANCE_PHASES = {"posted", "post_pending"}


def read_csv(content: bytes) -> list[dict[str, object]]:
    return list(csv.DictReader(io.StringIO(content.decode(), newline="")))


def read_parquet(content: bytes) -> list[dict[str, object]]:
    return pq.read_table(io.BytesIO(content)).to_pylist()


def read_xlsx(content: bytes) -> list[dict[str, object]]:
    book = openpyxl.load_workbook(io.BytesIO(content), read_only=True)
    rows = list(book["entries"].iter_rows(values_only=True))
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


READERS = {"csv": read_csv, "parquet": read_parquet, "xlsx": read_xlsx}


def test_parquet_blocks_end_on_whole_records():
    text = bytearray(b'a,"one\ntwo",1\nb,"x ""quoted"" \n y",2\nc,partial')
    cut = _row_boundary(text)
    assert bytes(text[:cut]).endswith(b'y",2\n')
    assert _row_boundary(bytearray(b'a,"still open\n')) == 0


def test_layouts_agree():
    assert set(EXPORT_COLUMNS) <= set(COLUMNS)
    assert tuple(parquet_schema().names) == COLUMNS


@pytest.mark.parametrize("fmt", sorted(READERS))
async def test_export_opens_and_adds_up_to_the_balances(client, api_key_factory, engine, fmt):
    book = await populate(engine)
    response = await client.get("/v1/ledger/export", params={"format": fmt}, headers=await api_key_factory("auditor"))
    assert response.status_code == 200, response.text
    assert f'filename="ledger-all-all.{fmt}"' in response.headers["content-disposition"]
    rows = READERS[fmt](response.content)

    assert len(rows) == book.entries
    assert list(rows[0]) == list(COLUMNS)
    assert rows[0]["transaction_id"] == str(book.transactions[0].id)
    assert rows[-1]["transaction_id"] == str(book.transactions[-1].id)
    totals: Counter[str] = Counter()
    for row in rows:
        if row["phase"] in BALANCE_PHASES:
            totals[str(row["account_code"])] += int(row["amount_minor"])
    async with engine.connect() as conn:
        trial = await Ledger(conn).trial_balance()
    assert {line.code: line.balance for line in trial.lines} == dict(totals)
    assert sum(totals.values()) == 0

    funding = next(r for r in rows if r["key"] == "test-fund-1" and int(r["amount_minor"]) > 0)
    # XLSX amounts are numbers (shown with the currency's digits); CSV and Parquet carry the decimal text.
    assert funding["amount"] == (1_000_000 if fmt == "xlsx" else "1000000.00")
    assert funding["currency"] == "COP"
    # A spreadsheet would evaluate it: CSV and XLSX carry it neutralised, Parquet (no spreadsheet) verbatim.
    assert funding["description"] == (AWKWARD_DESCRIPTION if fmt == "parquet" else "'" + AWKWARD_DESCRIPTION)
    assert json.loads(str(funding["references"])) == {"reference": "grant 7", "source": "ECHO"}
    assert funding["related_id"] in (None, "")
    reversal = next(r for r in rows if r["key"] == "test-pay-0-reversal")
    assert reversal["related_id"] == str(book.transactions[1].id)
    assert reversal["description"] == (None if fmt == "xlsx" else "")  # a spreadsheet has no empty text
    yen = next(r for r in rows if r["key"] == "test-yen" and int(r["amount_minor"]) < 0)
    assert (yen["amount"], yen["currency"]) == (-1500 if fmt == "xlsx" else "-1500", "JPY")


async def test_posted_at_keeps_microseconds_and_utc(client, api_key_factory, engine):
    book = await populate(engine)
    headers = await api_key_factory("finance")
    text_rows = read_csv((await client.get("/v1/ledger/export", headers=headers)).content)
    typed_rows = read_parquet((await client.get("/v1/ledger/export?format=parquet", headers=headers)).content)
    first = book.transactions[0].posted_at
    assert text_rows[0]["posted_at"] == first.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert typed_rows[0]["posted_at"] == first


async def test_time_window_keeps_whole_transactions_in_it(client, api_key_factory, engine):
    book = await populate(engine)
    start, end = book.posted_at(9), book.posted_at(13)
    params = {"from": start.isoformat(), "to": end.isoformat()}
    response = await client.get("/v1/ledger/export", params=params, headers=await api_key_factory("auditor"))
    rows = read_csv(response.content)
    wanted = [tx for tx in book.transactions if start <= tx.posted_at < end]
    assert 0 < len(wanted) < len(book.transactions)
    assert list(dict.fromkeys(r["transaction_id"] for r in rows)) == [str(tx.id) for tx in wanted]
    assert len(rows) == sum(len(tx.entries) for tx in wanted)


async def test_an_export_is_audited(client, api_key_factory):
    auditor = await api_key_factory("auditor", name="external auditor")
    await client.get("/v1/ledger/export", params={"format": "parquet"}, headers=auditor)
    events = (await client.get("/v1/audit-events", params={"action": "ledger.exported"}, headers=auditor)).json()
    [event] = events["items"]
    assert event["actor_name"] == "external auditor"
    assert event["after"]["format"] == "parquet"


async def test_bad_filters(client, api_key_factory):
    headers = await api_key_factory("auditor")
    later = "2026-11-22T10:00:00+00:00"
    earlier = "2026-11-22T09:00:00+00:00"
    assert_problem(await client.get("/v1/ledger/export", params={"from": later, "to": earlier}, headers=headers), 422)
    assert_problem(await client.get("/v1/ledger/export", params={"from": "2026-11-22T10:00:00"}, headers=headers), 422)
    assert_problem(await client.get("/v1/ledger/export", params={"format": "pdf"}, headers=headers), 422)
    unknown = "0190f1c2-0000-7000-8000-000000000000"
    assert_problem(await client.get("/v1/ledger/export", params={"programme_id": unknown}, headers=headers), 404)


async def test_empty_ledger_exports_a_header(client, api_key_factory):
    headers = await api_key_factory("auditor")
    for fmt, reader in READERS.items():
        response = await client.get("/v1/ledger/export", params={"format": fmt}, headers=headers)
        assert response.status_code == 200
        assert reader(response.content) == []
        if fmt == "xlsx":
            assert '<autoFilter ref="A1:Q1"/>' in sheet_xml(response.content)
    assert (await client.get("/v1/ledger/export", headers=headers)).text.splitlines() == [",".join(COLUMNS)]


async def test_programme_filter_keeps_its_whole_transactions(client, api_key_factory, session_factory, tmp_path):
    staff = await make_actors(api_key_factory)
    mine = await funded_programme(client, staff, session_factory, name="Mine")
    await funded_programme(client, staff, session_factory, name="Other", funds_minor=7_000_000)  # must stay out
    people = [
        await register(client, staff, "Inés", "Paredes Luna", born="1980-02-02", sex="female", admin1="Arauca"),
        await register(client, staff, "Tomás", "Bravo Celis", born="1975-07-07", sex="male", admin1="Arauca"),
    ]
    await enrol(client, staff, mine, people)
    paid = await released_batch(client, staff, mine, people, cycle="2026-11", amount="250000.00")
    await issue(session_factory, paid[people[0]])

    params = {"programme_id": mine, "format": "parquet"}
    response = await client.get("/v1/ledger/export", params=params, headers=staff.auditor)
    assert f"-programme-{mine}.parquet" in response.headers["content-disposition"]
    rows = read_parquet(response.content)
    prefix = f"prog:{mine}:"
    assert rows
    assert all(str(r["key"]).startswith(prefix) for r in rows)
    assert {str(r["account_code"]).rsplit(":", 1)[0] for r in rows} == {prefix[:-1]}
    assert {r["kind"] for r in rows} == {"funding", "reservation", "disbursement"}
    totals: Counter[str] = Counter()
    for row in rows:
        if row["phase"] in BALANCE_PHASES:
            totals[str(row["account_code"]).rsplit(":", 1)[1]] += int(row["amount_minor"])
    async with session_factory() as session:
        balances = await programme_balances(session, await get_programme(session, uuid.UUID(mine)))
    assert (-totals["donor_funds"], totals["available"], totals["committed"], totals["disbursed"]) == (
        balances.funded,
        balances.available,
        balances.committed,
        balances.disbursed,
    )
    assert totals["disbursed"] == 25_000_000

    path = tmp_path / "programme.parquet"
    path.write_bytes(response.content)
    outcome = verify_file(path, allow_gaps=True)
    assert outcome.ok, outcome
    assert outcome.transactions == len({r["transaction_id"] for r in rows})


def sheet_xml(content: bytes, number: int = 1) -> str:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        return archive.read(f"xl/worksheets/sheet{number}.xml").decode()


async def test_xlsx_has_typed_cells_a_frozen_header_an_autofilter_and_its_dimension(client, api_key_factory, engine):
    book = await populate(engine)
    content = (await client.get("/v1/ledger/export?format=xlsx", headers=await api_key_factory("auditor"))).content
    last = f"Q{book.entries + 1}"
    xml = sheet_xml(content)
    assert f'<dimension ref="A1:{last}"/>' in xml
    assert f'<autoFilter ref="A1:{last}"/>' in xml

    sheet = openpyxl.load_workbook(io.BytesIO(content))["entries"]
    assert sheet.freeze_panes == "A2"
    assert sheet.auto_filter.ref == f"A1:{last}"
    assert [c.value for c in sheet[1]] == list(COLUMNS)
    assert all(c.font.b for c in sheet[1])
    columns = {name: index for index, name in enumerate(COLUMNS)}
    for cells in sheet.iter_rows(min_row=2):
        assert all(cells[columns[name]].data_type == "n" for name in ("chain", "seq", "entry", "amount_minor"))
        for name in ("transaction_id", "key", "posted_at", "prev_hash", "hash", "references", "currency"):
            assert cells[columns[name]].data_type == "s", name
        amount, currency = cells[columns["amount"]], cells[columns["currency"]].value
        assert isinstance(amount.value, int | float)
        assert amount.number_format == ("#,##0" if currency == "JPY" else "#,##0.00")
        minor = cells[columns["amount_minor"]]
        assert Decimal(str(amount.value)) == Decimal(minor.value).scaleb(0 if currency == "JPY" else -2)
        assert minor.number_format == "0"  # never 1.23E+11


async def test_xlsx_keeps_amounts_beyond_excels_fifteen_digits_exact_as_text(client, api_key_factory, engine, tmp_path):
    async with engine.begin() as conn:
        ledger = Ledger(conn)
        source = await ledger.create_account("big:source", "COP", "asset")
        target = await ledger.create_account("big:target", "COP", "liability")
        for key, amount in (("fifteen", 999_999_999_999_999), ("sixteen", 1_234_567_890_123_456)):
            await ledger.post(
                TransactionSpec(key=key, entries=[EntrySpec(source.id, -amount), EntrySpec(target.id, amount)])
            )
    content = (await client.get("/v1/ledger/export?format=xlsx", headers=await api_key_factory("auditor"))).content
    rows = read_xlsx(content)
    assert [(r["amount"], r["amount_minor"]) for r in rows] == [
        (-9_999_999_999_999.99, -999_999_999_999_999),
        (9_999_999_999_999.99, 999_999_999_999_999),
        ("-12345678901234.56", "-1234567890123456"),
        ("12345678901234.56", "1234567890123456"),
    ]
    path = tmp_path / "big.xlsx"
    path.write_bytes(content)
    assert verify_file(path).ok


async def test_xlsx_continues_on_further_sheets_past_the_row_limit(client, api_key_factory, engine, monkeypatch):
    monkeypatch.setattr(writers, "XLSX_SHEET_ROWS", 7)
    book = await populate(engine)
    content = (await client.get("/v1/ledger/export?format=xlsx", headers=await api_key_factory("auditor"))).content
    workbook = openpyxl.load_workbook(io.BytesIO(content))
    sheets = [7] * (book.entries // 7) + ([book.entries % 7] if book.entries % 7 else [])
    assert len(sheets) > 2
    assert workbook.sheetnames == ["entries", *(f"entries {n}" for n in range(2, len(sheets) + 1))]
    for number, (sheet, rows) in enumerate(zip(workbook.worksheets, sheets, strict=True), start=1):
        assert [c.value for c in sheet[1]] == list(COLUMNS)
        assert (sheet.freeze_panes, sheet.auto_filter.ref) == ("A2", f"A1:Q{rows + 1}")
        assert f'<dimension ref="A1:Q{rows + 1}"/>' in sheet_xml(content, number)
    keys = [row[1] for sheet in workbook.worksheets for row in sheet.iter_rows(min_row=2, values_only=True)]
    assert len(keys) == book.entries


async def test_an_abandoned_xlsx_export_leaves_no_temporary_files(api_key_factory, engine, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    await populate(engine)
    body = writers.render(writers.ExportFormat.xlsx, engine, ExportQuery(None, None, None))
    first = await anext(body)
    assert first.startswith(b"PK")
    assert list(tmp_path.iterdir())
    await body.aclose()
    assert list(tmp_path.iterdir()) == []
