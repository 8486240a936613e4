"""Reading camt.053, pain.002 and MT940: what real files hold, across versions and layouts, and what is refused."""

from __future__ import annotations

import io
import uuid
from datetime import date

import pytest

from cbi_service.kit.settings import Settings
from cbi_service.reconciliation.formats import read_statement, sniff
from cbi_service.reconciliation.statement import MAX_ERRORS, StatementError, Summary

LIMITS = Settings().text_limits
E1, E2 = uuid.UUID("01920000-0000-7000-8000-000000000001"), uuid.UUID("01920000-0000-7000-8000-000000000002")


def read(content: bytes, batch_size: int = 2):
    summary = Summary()
    lines = [line for batch in read_statement(io.BytesIO(content), summary, batch_size, LIMITS) for line in batch]
    return lines, summary


def refused(content: bytes) -> list[tuple[int, str, str]]:
    try:
        _, summary = read(content)
    except StatementError as exc:
        return exc.errors
    assert summary.errors, "expected the statement to be refused"
    return summary.errors


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b'<?xml version="1.0"?><Document/>', "xml"),
        (b"\xef\xbb\xbf\r\n  <Document/>", "xml"),
        ('<?xml version="1.0" encoding="UTF-16"?><Document/>'.encode("utf-16"), "xml"),
        (b"{1:F01BANKBEBBAXXX0000000000}{2:O940}{4:\r\n:20:REF\r\n", "mt940"),
        (b":20:REF\n:25:123\n", "mt940"),
        (b"\n:940:\n:20:REF\n", "mt940"),
        (b"ABNANL2A\n940\nABNANL2A\n:20:ABN AMRO BANK NV\n", "mt940"),
        (b"entitlement_id,provider_ref,amount,currency,date\nx,,1.00,USD,2026-11-02\n", "csv"),
        (b"date;amount;currency;provider_ref;entitlement_id\n", "csv"),
        (b"", "csv"),
        (b"\xff\xfe\x00binary", "csv"),
    ],
)
def test_the_format_is_told_by_the_first_bytes(head, kind):
    assert sniff(head) == kind


CAMT_02 = f"""<?xml version="1.0" encoding="UTF-8"?>
<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.02">
  <BkToCstmrStmt>
    <GrpHdr><MsgId>1</MsgId><CreDtTm>2026-11-03T06:00:00</CreDtTm></GrpHdr>
    <Stmt>
      <Ntry>
        <Amt Ccy="JPY">3000</Amt><CdtDbtInd>DBIT</CdtDbtInd><Sts>BOOK</Sts>
        <BookgDt><DtTm>2026-11-02T23:30:00-05:00</DtTm></BookgDt>
        <NtryDtls>
          <Btch><NbOfTxs>2</NbOfTxs></Btch>
          <TxDtls>
            <Refs><EndToEndId>{E1}</EndToEndId></Refs>
            <AmtDtls><TxAmt><Amt Ccy="JPY">1000</Amt></TxAmt></AmtDtls>
          </TxDtls>
        </NtryDtls>
        <NtryDtls>
          <TxDtls>
            <Refs><AcctSvcrRef>B-2</AcctSvcrRef><EndToEndId>{E2.hex.upper()}</EndToEndId></Refs>
            <AmtDtls><TxAmt><Amt Ccy="JPY">2000</Amt></TxAmt></AmtDtls>
          </TxDtls>
        </NtryDtls>
      </Ntry>
      <Ntry>
        <Amt Ccy="KWD">1.250</Amt><CdtDbtInd>CRDT</CdtDbtInd><RvslInd>true</RvslInd><Sts>BOOK</Sts>
        <ValDt><Dt>2026-11-04+03:00</Dt></ValDt>
        <NtryDtls><TxDtls><Refs><EndToEndId>{E1.hex}</EndToEndId></Refs></TxDtls></NtryDtls>
      </Ntry>
      <Ntry>
        <Amt Ccy="JPY">9</Amt><CdtDbtInd>DBIT</CdtDbtInd><Sts>INFO</Sts><BookgDt><Dt>2026-11-04</Dt></BookgDt>
      </Ntry>
    </Stmt>
  </BkToCstmrStmt>
</Document>
""".encode()


def test_camt053_version_02_with_batch_entries_and_a_reversal():
    lines, summary = read(CAMT_02)
    assert (summary.format, summary.lines, summary.skipped) == ("camt.053", 3, 1)
    assert [(x.line_no, x.entitlement_id, x.provider_ref, x.amount_minor, x.currency) for x in lines] == [
        (1, E1, None, 1000, "JPY"),
        (2, E2, "B-2", 2000, "JPY"),
        (3, E1, None, -1250, "KWD"),  # a credit: money back; its entry's one transaction takes its amount
    ]
    assert lines[1].entitlement_ref == E2.hex.upper()  # as written
    # A booking time with an offset is its UTC day; a date with an offset is the date written.
    assert [x.value_date for x in lines] == [date(2026, 11, 3), date(2026, 11, 3), date(2026, 11, 4)]


def test_camt053_in_an_envelope_with_its_application_header():
    document = CAMT_02.split(b"\n", 1)[1]
    envelope = (
        b'<Envelope><AppHdr xmlns="urn:iso:std:iso:20022:tech:xsd:head.001.001.02"><Fr><FIId><FinInstnId>'
        b"<BICFI>BANKCOBBXXX</BICFI></FinInstnId></FIId></Fr><MsgDefIdr>camt.053.001.02</MsgDefIdr></AppHdr>"
        + document
        + b"</Envelope>"
    )
    lines, summary = read(envelope)
    assert (summary.format, [x.line_no for x in lines]) == ("camt.053", [1, 2, 3])


def test_camt053_without_a_namespace_and_with_an_entry_without_details():
    content = (
        b"<Document><BkToCstmrStmt><Stmt><Ntry><Amt Ccy='USD'>12.5</Amt><CdtDbtInd>DBIT</CdtDbtInd>"
        b"<Sts><Cd>BOOK</Cd></Sts><BookgDt><Dt>2026-11-02</Dt></BookgDt><AcctSvcrRef>FEE-1</AcctSvcrRef></Ntry>"
        b"</Stmt></BkToCstmrStmt></Document>"
    )
    [line], summary = read(content)
    assert (line.entitlement_ref, line.entitlement_id, line.provider_ref, line.amount_minor) == ("", None, None, 1250)
    assert (summary.format, summary.skipped) == ("camt.053", 0)


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("1.5", "JPY has 0 decimal digits"),
        ("-3", "not a decimal amount"),
        ("1,5", "not a decimal amount"),
        ("1e3", "not a decimal amount"),
        ("１０", "not a decimal amount"),
    ],
)
def test_camt053_amounts_are_exact_in_the_currency_exponent(amount, message):
    content = CAMT_02.replace(b'<Amt Ccy="JPY">2000</Amt>', f'<Amt Ccy="JPY">{amount}</Amt>'.encode())
    [(line, path, text)] = refused(content)
    assert line == 19
    assert path == "Document/BkToCstmrStmt/Stmt[1]/Ntry[1]/NtryDtls[2]/TxDtls[1]/AmtDtls/TxAmt/Amt"
    assert text.startswith(f"{path}: {message}")


def test_camt053_currency_is_checked():
    content = CAMT_02.replace(b'<Amt Ccy="JPY">1000</Amt>', b'<Amt Ccy="XYZ">1000</Amt>')
    [(line, path, text)] = refused(content)
    assert (line, text) == (13, f"{path}: unknown currency 'XYZ'")
    [(_, _, text)] = refused(CAMT_02.replace(b'<Amt Ccy="JPY">1000</Amt>', b"<Amt>1000</Amt>"))
    assert text.endswith("needs its currency (Ccy) as an ISO 4217 code")
    [(_, _, text)] = refused(CAMT_02.replace(b'<Amt Ccy="JPY">1000</Amt>', b'<Amt Ccy="KWD">999999999999999999</Amt>'))
    assert text.endswith(": too large")


def test_xml_problems_are_all_reported_up_to_a_limit():
    entry = (
        b"<Ntry><Amt Ccy='USD'>1.001</Amt><CdtDbtInd>DBIT</CdtDbtInd><Sts>BOOK</Sts>"
        b"<BookgDt><Dt>2026-11-02</Dt></BookgDt></Ntry>\n"
    )
    content = b"<Document><BkToCstmrStmt><Stmt>\n" + entry * 50 + b"</Stmt></BkToCstmrStmt></Document>"
    errors = refused(content)
    assert len(errors) == MAX_ERRORS
    assert [line for line, _, _ in errors[:3]] == [2, 3, 4]


@pytest.mark.parametrize(
    "hostile",
    [
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b"<Document><BkToCstmrStmt>&b;</BkToCstmrStmt></Document>",
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><Document>&x;</Document>',
    ],
)
def test_xml_with_a_dtd_is_refused(hostile):
    assert refused(hostile) == [(1, "", "a statement may not have a DOCTYPE")]


@pytest.mark.parametrize(
    "content",
    [
        b"<Document><BkToCstmrAcctRpt/></Document>",
        b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"><CstmrCdtTrfInitn/></Document>',
        b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.002.001.10"><BkToCstmrStmt/></Document>',
    ],
)
def test_other_iso20022_messages_are_refused(content):
    [(line, path, text)] = refused(content)
    assert (line, path.split("/")[0]) == (1, "Document")
    assert "is neither a camt.053 statement (BkToCstmrStmt) nor a pain.002" in text


def test_xml_that_is_no_iso20022_document_is_refused():
    assert refused(b"<html><body>statement</body></html>") == [
        (0, "", "an XML file, but no ISO 20022 Document with a camt.053 or pain.002")
    ]
    [(line, path, text)] = refused(b"<Document><BkToCstmrStmt><Stmt>")
    assert (line, path) == (1, "")
    assert text.startswith("not well-formed XML: ")


PAIN_03 = f"""<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.002.001.03">
<CstmrPmtStsRpt>
  <GrpHdr><MsgId>R</MsgId><CreDtTm>2026-11-05T10:00:00+01:00</CreDtTm></GrpHdr>
  <OrgnlGrpInfAndSts><OrgnlMsgId>B</OrgnlMsgId><OrgnlMsgNmId>pain.001.001.03</OrgnlMsgNmId>
    <GrpSts>ACSC</GrpSts></OrgnlGrpInfAndSts>
  <OrgnlPmtInfAndSts><OrgnlPmtInfId>P</OrgnlPmtInfId>
    <TxInfAndSts><OrgnlEndToEndId>{E1.hex}</OrgnlEndToEndId>
      <OrgnlTxRef><IntrBkSttlmDt>2026-11-03</IntrBkSttlmDt><Amt><InstdAmt Ccy="EUR">10.5</InstdAmt></Amt>
        <ReqdExctnDt>2026-11-01</ReqdExctnDt></OrgnlTxRef></TxInfAndSts>
    <TxInfAndSts><OrgnlEndToEndId>{E2.hex}</OrgnlEndToEndId>
      <OrgnlTxRef><Amt><InstdAmt Ccy="EUR">20.00</InstdAmt></Amt><ReqdExctnDt>2026-11-01</ReqdExctnDt></OrgnlTxRef>
    </TxInfAndSts>
    <TxInfAndSts><OrgnlEndToEndId>other</OrgnlEndToEndId><TxSts>ACWC</TxSts></TxInfAndSts>
    <TxInfAndSts><TxSts>ACSC</TxSts><OrgnlTxRef><Amt><InstdAmt Ccy="EUR">1.00</InstdAmt></Amt></OrgnlTxRef>
    </TxInfAndSts>
  </OrgnlPmtInfAndSts>
</CstmrPmtStsRpt>
</Document>""".encode()


def test_pain002_version_03_inherits_the_group_status_and_dates():
    lines, summary = read(PAIN_03)
    assert (summary.format, summary.skipped) == ("pain.002", 1)
    assert [(x.line_no, x.entitlement_id, x.amount_minor, x.currency, x.value_date) for x in lines] == [
        (1, E1, 1050, "EUR", date(2026, 11, 3)),  # the settlement date first
        (2, E2, 2000, "EUR", date(2026, 11, 1)),  # then the requested execution date
        (4, None, 100, "EUR", date(2026, 11, 5)),  # then the report's creation; no EndToEndId: ""
    ]
    assert lines[2].entitlement_ref == ""


@pytest.mark.parametrize("moment", ["2026-11-31T10:00:00Z", "0001-01-01T00:00:00+01:00", "yesterday"])
def test_pain002_dates_that_are_none_are_refused(moment):
    content = PAIN_03.replace(
        b"<OrgnlTxRef><IntrBkSttlmDt>2026-11-03</IntrBkSttlmDt>",
        f"<AccptncDtTm>{moment}</AccptncDtTm><OrgnlTxRef>".encode(),
    )
    path = "Document/CstmrPmtStsRpt/OrgnlPmtInfAndSts[1]/TxInfAndSts[1]/AccptncDtTm"
    assert refused(content) == [(8, path, f"{path}: not an ISO 8601 date and time (YYYY-MM-DDThh:mm:ss)")]


def mt940(*lines: str) -> bytes:
    return "\n".join(lines).encode()


def test_mt940_several_statements_each_with_its_currency():
    content = mt940(
        ":20:A",
        ":25:ACC-EUR",
        ":28C:1/1",
        ":60F:C261101EUR100,00",
        f":61:2611021102d10,5NTRFNONREF//BANK-1\n:86:/EREF/{E1.hex}/",
        ":62F:C261102EUR89,50",
        "-}{5:{CHK:0123456789AB}}",
        "{1:F01BANKBEBBAXXX0000000000}{2:O940}{4:",
        ":20:B",
        ":25:ACC-JPY",
        ":28C:7/2",
        ":60M:C261101JPY1000,",
        f":61:261231RD1500,NTRFNONREF\n:86:EREF+{E2}",
        ":62M:C261231JPY2500,",
    )
    lines, summary = read(content)
    assert (summary.format, len(lines)) == ("mt940", 2)
    assert [(x.line_no, x.entitlement_id, x.provider_ref, x.amount_minor, x.currency) for x in lines] == [
        (5, E1, "BANK-1", 1050, "EUR"),  # a lowercase debit mark is a debit
        (14, E2, None, -1500, "JPY"),  # a reversal of a debit puts money back
    ]
    assert [x.value_date for x in lines] == [date(2026, 11, 2), date(2026, 12, 31)]


def test_mt940_entry_date_across_the_year_end_is_the_booking_day():
    content = mt940(":20:A", ":60F:C261231EUR0,", ":61:2612310102D1,00NTRFNONREF", ":86:x")
    [line], _ = read(content)
    assert line.value_date == date(2027, 1, 2)


def test_mt940_fields_before_the_statement_and_long_lines_are_refused():
    assert refused(mt940(":25:ACC", ":20:A", ":60F:C261101EUR0,")) == [
        (1, "", ":25: comes before the statement's first :20:")
    ]
    long = mt940(":20:A", ":60F:C261101EUR0,", ":61:261102D1,00NTRFNONREF", ":86:" + "x" * 70_000)
    assert refused(long) == [(4, "", f"longer than {LIMITS.max_record_chars} characters")]
    no_currency = mt940(":20:A", ":61:261102D1,00NTRFNONREF")
    assert refused(no_currency) == [
        (2, "", "no currency: the statement's opening balance (:60F: or :60M:) comes first")
    ]
    [(line, _, text)] = refused(mt940(":20:A", ":60F:C26110EUR0,"))
    assert (line, text) == (2, ":60F: cannot be read")


def test_mt940_reference_without_a_uuid_is_kept_as_written():
    content = mt940(":20:A", ":60F:C261101USD0,", ":61:261102D1,00NTRFCARD-X-1//B", ":86:no id here")
    [line], _ = read(content)
    assert (line.entitlement_ref, line.entitlement_id, line.provider_ref) == ("CARD-X-1", None, "B")
