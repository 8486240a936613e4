"""camt.053, pain.002 and MT940 statements reconcile into the same four categories as the CSV, by the same code.

The books are the CSV tests' (`make_books`): "cards" issued E1..E5 at 100,000.00 COP, E6 failed and was
never issued, V1 is the voucher provider's. Each crafted statement names E1 and E2 as paid exactly, E3 with
another amount, E4 with another currency or bank reference, E6 (never issued) and a movement that is none of
ours, and never confirms E5: 2 matched, 2 amount_mismatch, the rest missing_in_ledger, E5
missing_in_statement. What the format says did not move money (a pending entry, a rejected or unsettled
payment, the statement's own information) is no line.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select

from cbi_service.audit.models import AuditEvent
from cbi_service.reconciliation.models import Reconciliation, StatementLine
from tests.reconciliation.support import today, upload, window
from tests.support import assert_problem, run_jobs

CAMT = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"
PAIN = "urn:iso:std:iso:20022:tech:xsd:pain.002.001.10"


def hex32(entitlement_id: str) -> str:
    """ISO 20022 gives EndToEndId 35 characters: a UUID goes without its hyphens."""
    return entitlement_id.replace("-", "")


async def reconciled(client, books, session_factory, settings, content: bytes, **upload_options) -> dict:
    response = await upload(client, books.staff.finance, content, **upload_options, **window())
    assert response.status_code == 202, response.text
    await run_jobs(session_factory, settings)
    report = await client.get(f"/v1/reconciliations/{response.json()['id']}", headers=books.staff.auditor)
    body = report.json()
    assert body["status"] == "completed", body
    return body


def found(report: dict, category: str) -> list[tuple[int | None, str]]:
    return [(item["line"], item["entitlement_id"]) for item in report["items"][category]]


def camt053(books) -> bytes:
    e, refs, day = books.e, books.refs, today()

    def tx(name: str, amount: str | None, *, ref: str | None = None, end_to_end: str | None = None) -> str:
        amt = f'<Amt Ccy="COP">{amount}</Amt><CdtDbtInd>DBIT</CdtDbtInd>' if amount else ""
        bank = f"<AcctSvcrRef>{ref}</AcctSvcrRef>" if ref else ""
        return (
            f"<TxDtls><Refs>{bank}<EndToEndId>{end_to_end or hex32(e[name])}</EndToEndId></Refs>{amt}"
            "<RltdPties><Cdtr><Pty><Nm>Beneficiary</Nm></Pty></Cdtr></RltdPties></TxDtls>"
        )

    def entry(amount: str, indicator: str, status: str, details: str, ccy: str = "COP") -> str:
        body = f"<NtryDtls>{details}</NtryDtls>" if details else ""
        return (
            f'<Ntry><Amt Ccy="{ccy}">{amount}</Amt><CdtDbtInd>{indicator}</CdtDbtInd><Sts><Cd>{status}</Cd></Sts>'
            f"<BookgDt><Dt>{day}</Dt></BookgDt><ValDt><Dt>{day}</Dt></ValDt>"
            f"<BkTxCd><Domn><Cd>PMNT</Cd></Domn></BkTxCd>{body}</Ntry>"
        )

    batch = "".join(
        [
            tx("E1", "100000.00", ref=refs["E1"]),
            tx("E2", "100000"),
            tx("E3", "90000.00", ref=refs["E3"]),
            tx("E6", "100000.00"),
            tx("V1", "100000.00", ref=refs["V1"]),
        ]
    )
    entries = [
        entry("490000.00", "DBIT", "BOOK", batch),  # one batch booking: positions 1-5
        entry("100000.00", "DBIT", "BOOK", tx("E4", None), ccy="USD"),  # 6: the entry's amount is its one tx's
        entry("5000000.00", "CRDT", "BOOK", ""),  # 7: the programme's funding, no details
        entry("100000.00", "DBIT", "PDNG", tx("E5", "100000.00")),  # 8: pending, no line
    ]
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Document xmlns="{CAMT}"><BkToCstmrStmt>'
        f"<GrpHdr><MsgId>STMT-1</MsgId><CreDtTm>{day}T06:00:00Z</CreDtTm></GrpHdr>"
        "<Stmt><Id>STMT-1-1</Id><Acct><Id><Othr><Id>123</Id></Othr></Id><Ccy>COP</Ccy></Acct>"
        f"{''.join(entries)}</Stmt></BkToCstmrStmt></Document>"
    ).encode()


async def test_camt053_sorts_into_the_four_categories(client, books, session_factory, settings):
    report = await reconciled(client, books, session_factory, settings, camt053(books))
    e = books.e
    assert report["lines_total"] == 7
    assert report["counts"] == {"matched": 2, "amount_mismatch": 2, "missing_in_ledger": 3, "missing_in_statement": 1}
    assert found(report, "matched") == [(1, hex32(e["E1"])), (2, hex32(e["E2"]))]
    assert found(report, "amount_mismatch") == [(3, hex32(e["E3"])), (6, hex32(e["E4"]))]
    assert found(report, "missing_in_ledger") == [(4, hex32(e["E6"])), (5, hex32(e["V1"])), (7, "")]
    assert found(report, "missing_in_statement") == [(None, e["E5"])]
    short, other_currency = report["items"]["amount_mismatch"]
    assert short["statement"] == {
        "amount": {"amount": "90000.00", "currency": "COP"},
        "date": today(),
        "provider_ref": books.refs["E3"],
    }
    assert (short["differences"], other_currency["differences"]) == (["amount"], ["currency"])
    funding = report["items"]["missing_in_ledger"][2]
    assert funding["statement"]["amount"] == {"amount": "-5000000.00", "currency": "COP"}


def pain002(books) -> bytes:
    e, refs, day = books.e, books.refs, today()

    def tx(name: str, status: str | None, amount: str = "100000.00", ref: str | None = None) -> str:
        return (
            f"<TxInfAndSts><StsId>S-{name}</StsId><OrgnlEndToEndId>{hex32(e.get(name, name))}</OrgnlEndToEndId>"
            + (f"<TxSts>{status}</TxSts>" if status else "")
            + f"<AccptncDtTm>{day}T09:30:00Z</AccptncDtTm>"
            + (f"<AcctSvcrRef>{ref}</AcctSvcrRef>" if ref else "")
            + f'<OrgnlTxRef><Amt><InstdAmt Ccy="COP">{amount}</InstdAmt></Amt>'
            f"<ReqdExctnDt><Dt>{day}</Dt></ReqdExctnDt><Cdtr><Pty><Nm>Beneficiary</Nm></Pty></Cdtr></OrgnlTxRef>"
            "</TxInfAndSts>"
        )

    first = [
        tx("E1", "ACSC", ref=refs["E1"]),  # 1 matched
        tx("E3", "ACSC", amount="90000.00"),  # 2 amount
        tx("E4", "ACSC", ref="PRV-SOMEONE-ELSE"),  # 3 provider_ref
        tx("E5", "RJCT"),  # 4 rejected: no line
        tx("E6", "ACSC"),  # 5 never issued
        tx("V1", "ACSP"),  # 6 accepted, not settled: no line
        tx("NOTPROVIDED", "ACSC", amount="50.00"),  # 7 none of ours
    ]
    second = [tx("E2", None)]  # 8: its status is its payment information's
    return (
        f'<Document xmlns="{PAIN}"><CstmrPmtStsRpt>'
        f"<GrpHdr><MsgId>PSR-1</MsgId><CreDtTm>{day}T10:00:00Z</CreDtTm></GrpHdr>"
        "<OrgnlGrpInfAndSts><OrgnlMsgId>PAY-1</OrgnlMsgId><OrgnlMsgNmId>pain.001.001.09</OrgnlMsgNmId>"
        "<GrpSts>PART</GrpSts></OrgnlGrpInfAndSts>"
        f"<OrgnlPmtInfAndSts><OrgnlPmtInfId>P1</OrgnlPmtInfId><PmtInfSts>PART</PmtInfSts>{''.join(first)}"
        "</OrgnlPmtInfAndSts>"
        f"<OrgnlPmtInfAndSts><OrgnlPmtInfId>P2</OrgnlPmtInfId><PmtInfSts>ACCC</PmtInfSts>{''.join(second)}"
        "</OrgnlPmtInfAndSts></CstmrPmtStsRpt></Document>"
    ).encode()


async def test_pain002_sorts_into_the_four_categories(client, books, session_factory, settings):
    report = await reconciled(client, books, session_factory, settings, pain002(books))
    e = books.e
    assert report["lines_total"] == 6
    assert report["counts"] == {"matched": 2, "amount_mismatch": 2, "missing_in_ledger": 2, "missing_in_statement": 1}
    assert found(report, "matched") == [(1, hex32(e["E1"])), (8, hex32(e["E2"]))]
    assert found(report, "amount_mismatch") == [(2, hex32(e["E3"])), (3, hex32(e["E4"]))]
    assert [i["differences"] for i in report["items"]["amount_mismatch"]] == [["amount"], ["provider_ref"]]
    assert found(report, "missing_in_ledger") == [(5, hex32(e["E6"])), (7, "NOTPROVIDED")]
    assert found(report, "missing_in_statement") == [(None, e["E5"])]


def mt940(books) -> tuple[bytes, dict[str, int]]:
    """The statement and the line of each `:61:` by name."""
    e, refs = books.e, books.refs
    now = datetime.now(UTC)
    day, entry = now.strftime("%y%m%d"), now.strftime("%m%d")
    e2 = hex32(e["E2"])
    e3_wrapped = f"Cycle 2026-11 payment {e['E3']}"
    lines = [
        "{1:F01BANKCOBBAXXX0000000000}{2:O9401200" + day + "BANKCOBBAXXX00000000000000000000N}{4:",
        ":20:STMT-2026-11",
        ":25:CO/0123456789",
        ":28C:1/1",
        f":60F:C{day}COP500000000,00",
        f":61:{day}{entry}D100000,00NTRFNONREF//{refs['E1']}",  # E1: SWIFT-style structured :86:
        f":86:/EREF/{e['E1']}/REMI/Cycle 2026-11",
        f":61:{day}D100000,NTRFNONREF",  # E2: German structured :86:, the EREF over two sub-fields
        f":86:166?00SEPA-UEBERWEISUNG?109310?20EREF+{e2[:22]}?21{e2[22:]}?22SVWZ+Cycle 2026-11",
        f":61:{day}D90000,00NTRFNONREF",  # E3: the UUID in free text, wrapped at 40 characters
        f":86:{e3_wrapped[:40]}",
        e3_wrapped[40:],
        f":61:{day}D100000,00NTRFNONREF//PRV-SOMEONE-ELSE",  # E4: another bank reference
        f":86:/EREF/{e['E4']}/",
        f":61:{day}D100000,00NTRFNONREF",  # E2 again
        f":86:/EREF/{e['E2']}/",
        f":61:{day}RC100000,00NTRFNONREF",  # E6, a reversed credit is a debit
        f"{e['E6']}",
        f":61:{day}C5000000,00NMSCNONREF",  # the programme's funding
        ":86:FUNDING ECHO GRANT",
        f":62F:C{day}COP504510000,00",
        f":86:Information to the account owner, not a transaction: {e['E5']}",
        "-}",
    ]
    at = {
        "E1": 6,
        "E2": 8,
        "E3": 10,
        "E4": 13,
        "E2 again": 15,
        "E6": 17,
        "funding": 19,
    }
    return ("\r\n".join(lines) + "\r\n").encode("latin-1"), at


async def test_mt940_sorts_into_the_four_categories(client, books, session_factory, settings):
    content, at = mt940(books)
    report = await reconciled(client, books, session_factory, settings, content)
    e = books.e
    assert report["lines_total"] == 7
    assert report["counts"] == {"matched": 2, "amount_mismatch": 2, "missing_in_ledger": 3, "missing_in_statement": 1}
    assert found(report, "matched") == [(at["E1"], e["E1"]), (at["E2"], hex32(e["E2"]))]
    assert found(report, "amount_mismatch") == [(at["E3"], e["E3"]), (at["E4"], e["E4"])]
    assert [i["differences"] for i in report["items"]["amount_mismatch"]] == [["amount"], ["provider_ref"]]
    assert found(report, "missing_in_ledger") == [(at["E2 again"], e["E2"]), (at["E6"], e["E6"]), (at["funding"], "")]
    assert found(report, "missing_in_statement") == [(None, e["E5"])]
    matched = report["items"]["matched"][0]
    assert matched["statement"]["provider_ref"] == books.refs["E1"]
    funding = report["items"]["missing_in_ledger"][2]["statement"]
    assert funding["amount"] == {"amount": "-5000000.00", "currency": "COP"}


async def test_the_format_is_told_by_content_not_name_or_type(client, books, session_factory, settings):
    """A camt.053 named .csv and sent as text/csv, an MT940 named .xml, a CSV named .sta: each read as what it is."""
    csv = f"entitlement_id,provider_ref,amount,currency,date\n{books.e['E1']},,100000.00,COP,{today()}\n".encode()
    cases = [
        (camt053(books), "statement.csv", "text/csv", "camt.053", 7),
        (mt940(books)[0], "statement.xml", "application/xml", "mt940", 7),
        (pain002(books), "report.txt", "application/octet-stream", "pain.002", 6),
        (csv, "statement.sta", "application/x-swift", "csv", 1),
    ]
    for content, filename, content_type, expected, lines in cases:
        response = await upload(
            client, books.staff.finance, content, filename=filename, content_type=content_type, **window()
        )
        assert response.status_code == 202, response.text
        assert response.json()["lines_total"] == lines
        async with session_factory() as session:
            event = await session.scalar(
                select(AuditEvent).where(
                    AuditEvent.action == "reconciliation.created", AuditEvent.resource_id == response.json()["id"]
                )
            )
        assert event is not None
        assert event.after["statement_format"] == expected


async def refused(client, books, content: bytes) -> list[tuple[str, str]]:
    problem = assert_problem(await upload(client, books.staff.finance, content), 422)
    return [(error["field"], error["message"]) for error in problem["errors"]]


async def test_malformed_camt053_is_refused_naming_the_element(client, books, session_factory):
    good = camt053(books)
    three_decimals = good.replace(b'<Amt Ccy="COP">90000.00</Amt>', b'<Amt Ccy="COP">90000.001</Amt>')
    no_indicator = good.replace(b"<CdtDbtInd>CRDT</CdtDbtInd>", b"<CdtDbtInd>C</CdtDbtInd>")
    tx3 = "Document/BkToCstmrStmt/Stmt[1]/Ntry[1]/NtryDtls[1]/TxDtls[3]/Amt"
    assert await refused(client, books, three_decimals) == [(f"file.{tx3}", f"line 2: {tx3}: COP has 2 decimal digits")]
    entry3 = "Document/BkToCstmrStmt/Stmt[1]/Ntry[3]/CdtDbtInd"
    assert await refused(client, books, no_indicator) == [(f"file.{entry3}", f"line 2: {entry3}: must be DBIT or CRDT")]

    [(field, message)] = await refused(client, books, good.replace(b"</Ntry><Ntry>", b"</Ntry><Ntry", 1))
    assert field == "file"
    assert message.startswith("line 2: not well-formed XML:")
    several = good.replace(b'<Amt Ccy="COP">100000</Amt><CdtDbtInd>DBIT</CdtDbtInd>', b"")
    tx2 = "Document/BkToCstmrStmt/Stmt[1]/Ntry[1]/NtryDtls[1]/TxDtls[2]"
    assert await refused(client, books, several) == [
        (f"file.{tx2}", f"line 2: {tx2}: needs its amount (Amt): the entry holds several transactions")
    ]
    [(field, message)] = await refused(client, books, good.replace(b"camt.053.001.08", b"camt.054.001.08"))
    assert field == "file.Document/BkToCstmrStmt"
    assert "camt.054.001.08 is neither a camt.053 statement" in message
    doctype = b'<?xml version="1.0"?>\n<!DOCTYPE d [<!ENTITY x "x">]>\n' + good.split(b"\n", 1)[1]
    assert await refused(client, books, doctype) == [("file", "line 3: a statement may not have a DOCTYPE")]
    async with session_factory() as session:
        assert await session.scalar(select(func.count()).select_from(Reconciliation)) == 0
        assert await session.scalar(select(func.count()).select_from(StatementLine)) == 0


async def test_malformed_pain002_is_refused_naming_the_element(client, books):
    good = pain002(books)
    tx1 = "Document/CstmrPmtStsRpt/OrgnlPmtInfAndSts[1]/TxInfAndSts[1]"
    no_amount = good.replace(b'<OrgnlTxRef><Amt><InstdAmt Ccy="COP">100000.00</InstdAmt></Amt>', b"<OrgnlTxRef>", 1)
    assert await refused(client, books, no_amount) == [
        (f"file.{tx1}", f"line 1: {tx1}: has no amount (OrgnlTxRef/Amt/InstdAmt) to reconcile")
    ]
    bad_status = good.replace(b"<TxSts>ACSC</TxSts>", b"<TxSts>paid</TxSts>", 1)
    assert await refused(client, books, bad_status) == [
        (f"file.{tx1}/TxSts", f"line 1: {tx1}/TxSts: not a status code (four capital letters, such as ACSC or RJCT)")
    ]
    unsaid = good.replace(b"<PmtInfSts>ACCC</PmtInfSts>", b"")
    tx8 = "Document/CstmrPmtStsRpt/OrgnlPmtInfAndSts[2]/TxInfAndSts[1]"
    assert await refused(client, books, unsaid) == [
        (f"file.{tx8}", f"line 1: {tx8}: has no TxSts, and no PmtInfSts or GrpSts that says it for every transaction")
    ]
    bad_date = good.replace(b"<AccptncDtTm>", b"<AccptncDtTm>x", 1)
    assert await refused(client, books, bad_date) == [
        (
            f"file.{tx1}/AccptncDtTm",
            f"line 1: {tx1}/AccptncDtTm: not an ISO 8601 date and time (YYYY-MM-DDThh:mm:ss)",
        )
    ]


async def test_a_report_that_confirms_no_payment_has_no_lines(client, books):
    rejected = pain002(books).replace(b"<TxSts>ACSC</TxSts>", b"<TxSts>RJCT</TxSts>")
    rejected = rejected.replace(b"<PmtInfSts>ACCC</PmtInfSts>", b"<PmtInfSts>RJCT</PmtInfSts>")
    assert await refused(client, books, rejected) == [("file", "none of its 8 transactions moved money")]


async def test_malformed_mt940_is_refused_naming_the_line(client, books):
    good, at = mt940(books)
    text = good.decode("latin-1")
    lines = text.split("\r\n")

    def changed(number: int, line: str) -> bytes:
        return "\r\n".join([*lines[: number - 1], line, *lines[number:]]).encode("latin-1")

    [(field, message)] = await refused(client, books, changed(at["E3"], lines[at["E3"] - 1].replace("D9", "X9")))
    assert (field, message[: message.index(" line:") + 6]) == ("file", f"line {at['E3']}: :61: not a statement line:")
    month = changed(at["E2"], lines[at["E2"] - 1][:6] + "13" + lines[at["E2"] - 1][8:])
    assert await refused(client, books, month) == [
        ("file", f"line {at['E2']}: :61: cannot be read (month must be in 1..12)")
    ]
    no_type = changed(at["E4"], lines[at["E4"] - 1].replace("NTRFNONREF", ""))
    assert await refused(client, books, no_type) == [
        ("file", f"line {at['E4']}: :61: has no transaction type (such as NTRF) after its amount")
    ]
    decimals = changed(at["E1"], lines[at["E1"] - 1].replace("D100000,00", "D100000,001"))
    assert await refused(client, books, decimals) == [("file", f"line {at['E1']}: :61: COP has 2 decimal digits")]
    ambiguous = changed(at["E3"] + 2, f"{lines[at['E3'] + 1]} {books.e['E5']}")
    assert await refused(client, books, ambiguous) == [
        ("file", f"line {at['E3']}: names more than one entitlement id and marks none as the EREF")
    ]
    headless = "\r\n".join(line for line in lines if not line.startswith(":20:")).encode("latin-1")
    assert await refused(client, books, headless) == [
        ("file", "no :20: (transaction reference number) opens a statement")
    ]
