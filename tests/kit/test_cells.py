"""Spreadsheet cells: formulas neutralised, negative amounts kept, and the SQL twin agreeing with Python."""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import text

from cbi_service.kit.cells import SafeWriter, neutralise, neutralised_sql, restore

HOSTILE = ["=cmd|' /C calc'!A0", "@SUM(1+1)", "+1+1", "-1+1", "-A1", "\t=1", "\r=1", "\n=1", "'=1", "'"]
HARMLESS = ["", "Arauca", "-150.00", "-3", "150.00", "a=b", "ñandú"]


@pytest.mark.parametrize("value", HOSTILE)
def test_formulas_start_with_an_apostrophe_and_restore_exactly(value):
    assert neutralise(value) == "'" + value
    assert restore(neutralise(value)) == value


@pytest.mark.parametrize("value", HARMLESS)
def test_text_and_negative_numbers_are_kept(value):
    assert neutralise(value) == value
    assert restore(neutralise(value)) == value


def test_the_writer_quotes_text_and_keeps_numbers():
    out = io.StringIO()
    SafeWriter(out).writerow(["=1+1", "x;=2+2", -150, None])
    assert out.getvalue() == '"\'=1+1","x;=2+2",-150,""\r\n'
    assert next(csv.reader(io.StringIO(out.getvalue()))) == ["'=1+1", "x;=2+2", "-150", ""]


async def test_sql_neutralises_like_python(engine):
    values = [*HOSTILE, *HARMLESS, "-1.", "-1.5.5", "-٣"]
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(f"SELECT v, {neutralised_sql('v')} FROM unnest(CAST(:values AS text[])) AS t(v)"), {"values": values}
        )
        assert {row[0]: row[1] for row in rows} == {v: neutralise(v) for v in values}
