"""Reconciliation of a provider statement: a crafted statement lands in the four categories exactly.

Programme "cards" pays E1..E6 100,000.00 COP each; E1..E5 are issued (disbursed in the ledger), E6 failed
at the provider and never was. No entitlement is left pending, so the worker's issuance lanes, which run
with the reconciliation job, have nothing to send. A voucher programme (provider "vouchers") issues V1.
The statement for "cards":

    line 2  E1 100000.00 COP      matched
    line 3  E2 100000    COP      matched (fewer decimals, same amount)
    line 4  E3  90000.00 COP      amount_mismatch
    line 5  E4 100000.00 USD      amount_mismatch (currency)
    line 6  E2 100000.00 COP      missing_in_ledger (E2 already claimed by line 3)
    line 7  E6 100000.00 COP      missing_in_ledger (failed, never issued)
    line 8  V1 100000.00 COP      missing_in_ledger (another provider's)
    line 9  CARD-X-1 50.00 COP    missing_in_ledger (not ours at all)
    E5 is named by no line        missing_in_statement
"""

from __future__ import annotations

import csv
import io
import uuid

from sqlalchemy import func, select

from cbi_service.reconciliation.models import Reconciliation, StatementLine
from tests.reconciliation.support import today, upload, window
from tests.support import assert_problem, run_jobs

HEADER = "date,entitlement_id,amount,currency,provider_ref,branch\n"


def statement(books, lines: list[tuple[str, str, str]]) -> bytes:
    rows = [
        f"{today()},{books.e.get(name, name)},{amount},{currency},{books.refs.get(name, '')},north"
        for name, amount, currency in lines
    ]
    return (HEADER + "\n".join(rows) + "\n").encode()


CRAFTED = [
    ("E1", "100000.00", "COP"),
    ("E2", "100000", "COP"),
    ("E3", "90000.00", "COP"),
    ("E4", "100000.00", "USD"),
    ("E2", "100000.00", "COP"),
    ("E6", "100000.00", "COP"),
    ("V1", "100000.00", "COP"),
    ("CARD-X-1", "50.00", "COP"),
]


async def test_crafted_statement_sorts_into_the_four_categories(client, books, session_factory, settings):
    response = await upload(client, books.staff.finance, statement(books, CRAFTED), **window())
    assert response.status_code == 202, response.text
    created = response.json()
    assert (created["status"], created["lines_total"], created["lines_done"]) == ("running", 8, 0)
    url = f"/v1/reconciliations/{created['id']}"
    running = (await client.get(url, headers=books.staff.auditor)).json()
    assert running["status"] == "running"
    assert running["items"] == {c: [] for c in created["counts"]}

    await run_jobs(session_factory, settings)
    report = (await client.get(url, headers=books.staff.auditor)).json()
    assert report["status"] == "completed"
    assert report["lines_done"] == 8
    assert report["finished_at"] is not None
    assert report["counts"] == {"matched": 2, "amount_mismatch": 2, "missing_in_ledger": 4, "missing_in_statement": 1}
    items = report["items"]
    e = books.e
    assert [(i["line"], i["entitlement_id"]) for i in items["matched"]] == [(2, e["E1"]), (3, e["E2"])]
    assert [(i["line"], i["entitlement_id"]) for i in items["amount_mismatch"]] == [(4, e["E3"]), (5, e["E4"])]
    assert [(i["line"], i["entitlement_id"]) for i in items["missing_in_ledger"]] == [
        (6, e["E2"]),
        (7, e["E6"]),
        (8, e["V1"]),
        (9, "CARD-X-1"),
    ]
    [unnamed] = items["missing_in_statement"]
    assert (unnamed["line"], unnamed["entitlement_id"], unnamed["statement"]) == (None, e["E5"], None)
    assert unnamed["ledger"]["amount"] == {"amount": "100000.00", "currency": "COP"}
    assert unnamed["ledger"]["provider_ref"] == books.refs["E5"]

    short = items["amount_mismatch"][0]
    assert short["statement"] == {
        "amount": {"amount": "90000.00", "currency": "COP"},
        "date": today(),
        "provider_ref": books.refs["E3"],
    }
    assert short["ledger"]["amount"] == {"amount": "100000.00", "currency": "COP"}
    assert items["amount_mismatch"][1]["statement"]["amount"] == {"amount": "100000.00", "currency": "USD"}
    assert [i["differences"] for i in items["amount_mismatch"]] == [["amount"], ["currency"]]
    assert all(i["differences"] == [] for i in items["matched"] + items["missing_in_statement"])
    assert all(i["ledger"] is None for i in items["missing_in_ledger"][1:])


async def test_a_line_naming_another_provider_ref_is_a_mismatch(client, books, session_factory, settings):
    """Same amount and currency but not the transfer the ledger recorded: not matched. A blank ref is not
    compared (a statement may not carry one)."""
    e, refs = books.e, books.refs
    rows = [
        f"{today()},{e['E1']},100000.00,COP,{refs['E1']},north",
        f"{today()},{e['E2']},100000.00,COP,PRV-SOMEONE-ELSE,north",
        f"{today()},{e['E3']},90000.00,COP,PRV-SOMEONE-ELSE,north",
        f"{today()},{e['E4']},100000.00,COP,,north",
    ]
    content = (HEADER + "\n".join(rows) + "\n").encode()
    created = (await upload(client, books.staff.finance, content, **window())).json()
    await run_jobs(session_factory, settings)
    report = (await client.get(f"/v1/reconciliations/{created['id']}", headers=books.staff.auditor)).json()
    assert report["counts"] == {"matched": 2, "amount_mismatch": 2, "missing_in_ledger": 0, "missing_in_statement": 1}
    items = report["items"]
    assert [i["entitlement_id"] for i in items["matched"]] == [e["E1"], e["E4"]]
    other_ref, both = items["amount_mismatch"]
    assert (other_ref["entitlement_id"], other_ref["differences"]) == (e["E2"], ["provider_ref"])
    assert (other_ref["statement"]["provider_ref"], other_ref["ledger"]["provider_ref"]) == (
        "PRV-SOMEONE-ELSE",
        refs["E2"],
    )
    assert (both["entitlement_id"], both["differences"]) == (e["E3"], ["amount", "provider_ref"])


async def test_report_as_csv(client, books, session_factory, settings):
    created = (await upload(client, books.staff.auditor, statement(books, CRAFTED), **window())).json()
    await run_jobs(session_factory, settings)
    response = await client.get(
        f"/v1/reconciliations/{created['id']}", headers={**books.staff.finance, "Accept": "text/csv"}
    )
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["category"], r["line"]) for r in rows] == [
        ("matched", "2"),
        ("matched", "3"),
        ("amount_mismatch", "4"),
        ("amount_mismatch", "5"),
        ("missing_in_ledger", "6"),
        ("missing_in_ledger", "7"),
        ("missing_in_ledger", "8"),
        ("missing_in_ledger", "9"),
        ("missing_in_statement", ""),
    ]
    mismatch = rows[2]
    assert (mismatch["statement_amount"], mismatch["ledger_amount"], mismatch["ledger_currency"]) == (
        "90000.00",
        "100000.00",
        "COP",
    )


async def test_the_period_limits_missing_in_statement(client, books, session_factory, settings):
    lines = statement(books, [("E1", "100000.00", "COP")])
    created = (
        await upload(client, books.staff.finance, lines, period_start="2020-01-01", period_end="2020-01-31")
    ).json()
    await run_jobs(session_factory, settings)
    report = (await client.get(f"/v1/reconciliations/{created['id']}", headers=books.staff.finance)).json()
    assert report["counts"] == {"matched": 1, "amount_mismatch": 0, "missing_in_ledger": 0, "missing_in_statement": 0}
    assert (report["period_start"], report["period_end"]) == ("2020-01-01", "2020-01-31")


async def test_unreadable_statements_are_refused_whole(client, books, session_factory):
    bad = statement(books, [("E1", "100000.001", "COP"), ("E2", "1.00", "XYZ")]) + b"oops\n"
    problem = assert_problem(await upload(client, books.staff.finance, bad), 422)
    assert [(e["field"], e["message"].split(":")[0]) for e in problem["errors"]] == [
        ("file.amount", "line 2"),
        ("file.currency", "line 3"),
        ("file", "line 4"),
    ]
    missing = b"entitlement_id,amount\nx,1\n"
    problem = assert_problem(await upload(client, books.staff.finance, missing), 422)
    assert {e["field"] for e in problem["errors"]} == {"file.provider_ref", "file.currency", "file.date"}
    assert_problem(await upload(client, books.staff.finance, HEADER.encode()), 422)
    assert_problem(await upload(client, books.staff.finance, statement(books, CRAFTED), provider="nobody"), 422)
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Reconciliation)) == 0
        assert await session.scalar(select(func.count()).select_from(StatementLine)) == 0


async def test_every_problem_of_a_request_is_reported_at_once(client, books):
    bad = statement(books, [("E1", "100000.001", "COP"), ("E2", "1.00", "COP")])
    problem = assert_problem(await upload(client, books.staff.finance, bad, provider="nobody"), 422)
    assert [e["field"] for e in problem["errors"]] == ["provider", "file.amount"]
    good = statement(books, [("E1", "100000.00", "COP")])
    window = {"period_start": "2026-02-01", "period_end": "2026-01-01"}
    problem = assert_problem(await upload(client, books.staff.finance, good, provider="nobody", **window), 422)
    assert [(e["field"], e["message"]) for e in problem["errors"]] == [
        ("provider", "not a configured provider"),
        ("period_end", "must not be before period_start"),
    ]


async def test_the_statement_is_the_multipart_field_file(client, books):
    content = statement(books, [("E1", "100000.00", "COP")])
    response = await client.post(
        "/v1/reconciliations",
        data={"provider": "cards"},
        files={"statement": ("statement.csv", content, "text/csv")},
        headers=books.staff.finance,
    )
    problem = assert_problem(response, 422)
    assert [(e["field"], e["message"]) for e in problem["errors"]] == [("file", "Field required")]


async def test_idempotent_upload(client, books):
    headers = {**books.staff.finance, "Idempotency-Key": "statement-2026-11"}
    content = statement(books, CRAFTED)
    first = await upload(client, headers, content)
    again = await upload(client, headers, content)
    assert (again.status_code, again.json()) == (202, first.json())
    assert again.headers["idempotent-replayed"] == "true"
    assert_problem(await upload(client, headers, statement(books, CRAFTED[:2])), 422)


async def test_unknown_reconciliation(client, api_key_factory):
    headers = await api_key_factory("auditor")
    assert_problem(await client.get(f"/v1/reconciliations/{uuid.uuid4()}", headers=headers), 404)


async def test_a_100k_line_statement_is_reconciled_in_chunks(client, books, session_factory, settings):
    lines = [("E1", "100000.00", "COP")] + [(f"CARD-{n}", "10.00", "COP") for n in range(99_999)]
    response = await upload(client, books.staff.finance, statement(books, lines), **window())
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["lines_total"] == 100_000
    await run_jobs(session_factory, settings)
    url = f"/v1/reconciliations/{created['id']}"
    report = (await client.get(url, headers=books.staff.finance)).json()
    assert (report["status"], report["lines_done"]) == ("completed", 100_000)
    assert report["counts"] == {
        "matched": 1,
        "amount_mismatch": 0,
        "missing_in_ledger": 99_999,
        "missing_in_statement": 4,
    }
    assert len(report["items"]["missing_in_ledger"]) == 99_999
    assert report["items"]["missing_in_ledger"][-1]["line"] == 100_001


async def test_csv_neutralises_statement_cells_a_spreadsheet_would_evaluate(client, books, session_factory, settings):
    content = (
        f"{HEADER}{today()},+1+1,50.00,COP,@SUM(1+1),north\n{today()},{books.e['E1']},-150.00,COP,=1+1,north\n"
    ).encode()
    created = (await upload(client, books.staff.finance, content, **window())).json()
    await run_jobs(session_factory, settings)
    response = await client.get(
        f"/v1/reconciliations/{created['id']}", headers={**books.staff.finance, "Accept": "text/csv"}
    )
    rows = {r["line"]: r for r in csv.DictReader(io.StringIO(response.text))}
    assert (rows["2"]["entitlement_id"], rows["2"]["statement_provider_ref"]) == ("'+1+1", "'@SUM(1+1)")
    assert (rows["3"]["statement_provider_ref"], rows["3"]["statement_amount"]) == ("'=1+1", "-150.00")
