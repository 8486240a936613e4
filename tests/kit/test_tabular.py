"""The reader of people's files: which encoding, which separator, which dates."""

from __future__ import annotations

import codecs
import io
import re
from datetime import date

import pytest

from cbi_service.kit.bounded import TextLimits
from cbi_service.kit.tabular import DATE_MESSAGE, UnreadableFile, choose_delimiter, detect_encoding, parse_date

HEADER = "given_names,family_names,date_of_birth\r\n"
SPANISH = ["María José,Mejía Muñoz,12/03/1990", "Íñigo,Núñez Peña,1/2/1985", "ÁNGELA,HERNÁNDEZ,3/4/1970",
           "Raúl,Ortíz León,5/6/1960", "Seán,O’Brien,7/8/1950", "Zoë,Lefèvre,9/10/1940"]  # fmt: skip
TEXT = HEADER + "\r\n".join(SPANISH) + "\r\n"
LIMITS = TextLimits(max_record_chars=65_536, max_field_chars=4_096)


def detect(content: bytes) -> str:
    return detect_encoding(io.BytesIO(content))


@pytest.mark.parametrize(
    ("content", "encoding"),
    [
        (TEXT.encode("utf-8"), "utf-8"),
        (b"given_names,family_names\nAna,Paz\n", "utf-8"),
        (TEXT.encode("utf-8-sig"), "utf-8-sig"),
        (codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le"), "utf-16"),
        (codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be"), "utf-16"),
        (TEXT.encode("cp1252"), "cp1252"),
        ((HEADER + "MARÍA JOSÉ,MEJÍA MUÑOZ,1/1/1990\r\n").encode("cp1252"), "cp1252"),  # capitals only
        ((HEADER + "Raúl,Paz,1/1/1990\r\n").encode("cp1252"), "cp1252"),  # one ú: cp850 is the library's guess
        ((HEADER + "Ana,Paz – Díaz,1/1/1990,€ 5,N° 3\r\n").encode("cp1252"), "cp1252"),
        ((HEADER + "María,Núñez,1/1/1990\r\n").encode("latin-1"), "cp1252"),
    ],
)
def test_accepted_encodings(content: bytes, encoding: str):
    assert detect(content) == encoding
    assert content.decode(encoding) in {TEXT, content.decode(encoding)}


def test_windows_1252_spanish_names_are_never_read_as_another_encoding():
    """charset-normalizer on its own says cp1250 here, which would store "Muñoz" as "Muńoz"."""
    content = TEXT.encode("cp1252")
    assert content.decode(detect(content)) == TEXT


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ((HEADER + "María,Núñez,1/1/1990\r\n").encode("mac_roman"), "line 2 reads as garbled text in Windows-1252"),
        ((HEADER + "José,Ramos,1/1/1990\r\n").encode("mac_roman"), "line 2 reads as garbled text"),
        ((HEADER + "María,Núñez,1/1/1990\r\n").encode("cp850"), "line 2 reads as garbled text"),
        ((HEADER + "山田,太郎,1/1/1990\r\n").encode("shift_jis"), "line 2 reads as garbled text"),
        ((HEADER + "Мария,Иванова,1/1/1990\r\n").encode("cp1251"), "it reads as garbled text in Windows-1252"),
        ((HEADER + "Μαρία,Παπαδοπούλου,1/1/1990\r\n").encode("cp1253"), "it reads as garbled text"),
        (HEADER.encode() + b"Ana\x81,Paz\r\n", "line 2 holds bytes that are text neither in UTF-8 nor in Windows-1252"),
        (TEXT.encode("utf-8") + "Peña,Paz,1/1/1990\r\n".encode("cp1252"), "line 2 is written in UTF-8"),
        (TEXT.encode("utf-8")[:-3] + b"\xc3\r\n", "line 2 is written in UTF-8"),  # cut in the middle of a letter
        (TEXT.encode("utf-16-le"), "holds NUL bytes (UTF-16 without a byte-order mark?)"),
        (HEADER.encode() + "Mar\ufffda".encode() + b",Pe\xf1a\r\n", "replacement character"),
    ],
)
def test_encodings_that_cannot_be_told_apart_are_refused(content: bytes, reason: str):
    with pytest.raises(UnreadableFile, match='save it as "CSV UTF-8"') as refused:
        detect(content)
    assert reason in str(refused.value)


def test_letters_lost_by_an_earlier_conversion_are_refused():
    with pytest.raises(UnreadableFile, match="line 3 holds the replacement character"):
        detect((HEADER + "Ana,Paz\r\nMar\ufffda,Mej\ufffda\r\n").encode())


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (codecs.BOM_UTF8 + HEADER.encode() + b"Ana\xff\r\n", "starts as UTF-8 (byte-order mark) but line 2 is not"),
        (codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le")[:-1], "starts as UTF-16 (byte-order mark) but is not"),
    ],
)
def test_a_byte_order_mark_decides_and_the_file_must_keep_to_it(content: bytes, reason: str):
    with pytest.raises(UnreadableFile, match=re.escape(reason)):
        detect(content)


def test_the_whole_file_is_read_not_a_sample():
    """A sign of another encoding far past the first megabyte still refuses the file."""
    clean = (HEADER + "María,Núñez,1/1/1990\r\n" * 120_000).encode("cp1252")
    assert len(clean) > 2 << 20
    assert detect(clean) == "cp1252"
    with pytest.raises(UnreadableFile, match="line 120002 reads as garbled text"):
        detect(clean + "Mar‡a,Paz,1/1/1990\r\n".encode("cp1252"))
    with pytest.raises(UnreadableFile, match="line 120002 is written in UTF-8"):
        detect(clean + "María,Paz,1/1/1990\r\n".encode())
    assert detect(clean.decode("cp1252").encode("utf-8")) == "utf-8"


def test_a_stream_is_rewound_after_detection():
    stream = io.BytesIO(TEXT.encode("cp1252"))
    stream.read(10)
    assert detect_encoding(stream) == "cp1252"
    assert stream.tell() == 0


REQUIRED = frozenset({"given_names", "family_names", "date_of_birth"})


@pytest.mark.parametrize(
    ("line", "delimiter"),
    [
        ("given_names,family_names,date_of_birth\r\n", ","),
        ("given_names;family_names;date_of_birth;sex\r\n", ";"),
        ("given_names\tfamily_names\tdate_of_birth\n", "\t"),
        (" Given_Names ; FAMILY_NAMES ; date_of_birth ", ";"),
        # More commas than semicolons, but inside quotes: the separator is the one that yields the columns.
        ('"given_names";"family_names";"date_of_birth";"notes, remarks, more"\r\n', ";"),
    ],
)
def test_the_separator_is_the_one_that_splits_the_header_into_its_columns(line: str, delimiter: str):
    assert choose_delimiter(line, REQUIRED, LIMITS) == delimiter


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("given_names|family_names|date_of_birth\n", "missing columns: date_of_birth, family_names, given_names"),
        ("given_names;family_names;born\n", "missing columns: date_of_birth (the header was read with comma"),
        ("\r\n", "the file has no header row"),
        ("g\x00i\x00v\x00e\x00n\x00", "NUL characters"),
        ("given_names," + "x" * 70_000, "line 1 is longer than 65536 characters"),
    ],
)
def test_a_header_without_the_columns_is_refused(line: str, reason: str):
    with pytest.raises(UnreadableFile, match=re.escape(reason)):
        choose_delimiter(line, REQUIRED, LIMITS)


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("1990-03-12", date(1990, 3, 12)),
        ("1990-3-2", date(1990, 3, 2)),
        ("12/03/1990", date(1990, 3, 12)),
        ("31/12/1990", date(1990, 12, 31)),
        ("1/2/1985", date(1985, 2, 1)),
        ("01.02.1985", date(1985, 2, 1)),
        ("01-02-1985", date(1985, 2, 1)),
        (" 12/03/1990 ", date(1990, 3, 12)),
    ],
)
def test_dates_are_iso_or_day_first(text: str, day: date):
    assert parse_date(text) == day


@pytest.mark.parametrize(
    "text", ["12/31/1990", "31/02/1990", "12/03/90", "1990", "12/03-1990", "1990/03/12", "١٢/٠٣/١٩٩٠", "", "x"]
)
def test_a_month_first_or_other_date_is_an_error_never_a_guess(text: str):
    with pytest.raises(ValueError, match=r"must be a date as YYYY-MM-DD or DD/MM/YYYY \(day first\)") as error:
        parse_date(text)
    assert str(error.value) == DATE_MESSAGE
