"""Reading statements: lenient about layout, strict about what the numbers mean."""

from __future__ import annotations

import io
import uuid
from datetime import date

import pytest

from cbi_service.kit.settings import Settings
from cbi_service.reconciliation.statement import MAX_ERRORS, StatementError, Summary, parse_amount, read_statement

LIMITS = Settings().text_limits


def read(text: str, batch_size: int = 2):
    summary = Summary()
    batches = read_statement(io.BytesIO(text.encode()), summary, batch_size, LIMITS)
    return [line for batch in batches for line in batch], summary


def test_columns_in_any_order_with_extras_bom_and_semicolons():
    ent = uuid.uuid4()
    text = (
        "\ufeffDate;Currency;Amount;Provider_Ref;Entitlement_ID;Branch\r\n"
        f"2026-11-02;cop;150000;P-1;{ent};north\r\n"
        "\r\n"
        "2026-11-03T23:30:00-05:00;JPY;1500;;not-ours;south\r\n"
    )
    lines, summary = read(text)
    assert [(x.line_no, x.entitlement_id, x.entitlement_ref, x.provider_ref) for x in lines] == [
        (2, ent, str(ent), "P-1"),
        (4, None, "not-ours", None),
    ]
    assert [(x.amount_minor, x.currency) for x in lines] == [(15_000_000, "COP"), (1500, "JPY")]
    assert (summary.lines, summary.first_date, summary.last_date) == (2, date(2026, 11, 2), date(2026, 11, 4))


def test_a_quoted_field_across_lines_keeps_line_numbers_true():
    text = (
        "entitlement_id,provider_ref,amount,currency,date,note\n"
        'a,"P\n2",1.00,USD,2026-11-02,x\n'
        "b,P3,2.00,USD,2026-11-02,y\n"
    )
    lines, _ = read(text)
    assert [(x.line_no, x.provider_ref) for x in lines] == [(2, "P\n2"), (4, "P3")]


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [("150000.5", "COP", 15_000_050), ("150000.50", "COP", 15_000_050), ("-3", "USD", -300), ("7.000", "JPY", 7)],
)
def test_amounts_in_major_units(amount, currency, minor):
    assert parse_amount(amount, currency) == minor


@pytest.mark.parametrize(("amount", "currency"), [("1.005", "USD"), ("1,5", "USD"), ("1e3", "USD"), ("", "USD")])
def test_amounts_refused(amount, currency):
    with pytest.raises(ValueError, match=r"decimal"):
        parse_amount(amount, currency)


def test_bad_lines_are_all_reported_up_to_a_limit():
    good = f"{uuid.uuid4()},P,1.00,USD,2026-11-02"
    bad = [
        "x,P,1.001,USD,2026-11-02",
        "x,P,1.00,ZZZ,2026-11-02",
        "x,P,1.00,USD,02/11/2026",
        "x,P,1.00,USD",
    ]
    _, summary = read("entitlement_id,provider_ref,amount,currency,date\n" + "\n".join([good, *bad]) + "\n")
    assert [(line, column) for line, column, _ in summary.errors] == [
        (3, "amount"),
        (4, "currency"),
        (5, "date"),
        (6, ""),
    ]
    _, summary = read("entitlement_id,provider_ref,amount,currency,date\n" + "x,P,oops,USD,2026-11-02\n" * 50)
    assert len(summary.errors) == MAX_ERRORS


def test_missing_columns_and_foreign_files_are_refused():
    with pytest.raises(StatementError) as missing:
        read("entitlement_id,amount,currency\n1,2,USD\n")
    assert [(line, column) for line, column, _ in missing.value.errors] == [(1, "provider_ref"), (1, "date")]
    batches = read_statement(io.BytesIO(b"\xff\xfe\x00binary"), Summary(), 10, LIMITS)
    with pytest.raises(StatementError):
        next(batches)


@pytest.mark.parametrize("amount", ["１０.００", "1٠.00", "10.०0"])
def test_statement_amounts_are_ascii_digits_only(amount):
    with pytest.raises(ValueError, match=r"decimal"):
        parse_amount(amount, "USD")


def test_amounts_and_dates_out_of_range_are_refused_not_crashed_on():
    """A BIGINT holds at most 2^63 - 1 minor units; a day before year 1 in UTC does not exist."""
    with pytest.raises(ValueError, match="too large"):
        parse_amount("99999999999999999.999", "KWD")
    assert parse_amount("9223372036854775.807", "KWD") == 2**63 - 1
    _, summary = read(
        "entitlement_id,provider_ref,amount,currency,date\n"
        "x,P,99999999999999999.999,KWD,2026-11-02\n"
        "x,P,1.00,USD,0001-01-01T00:00:00+01:00\n"
    )
    assert [(line, column) for line, column, _ in summary.errors] == [(2, "amount"), (3, "date")]
