"""Printable sheets of paper vouchers: A4 pages cut into eight A7 vouchers along dashed lines.

Each voucher carries its QR (the signed token, error correction M), the code a merchant can type when the
QR will not scan, the amount, the expiry, the programme and the holder's given names with the family
initial. Text is set in the PDF's built-in Helvetica and Courier (WinAnsi, i.e. Windows-1252), so no font
is embedded: letters those fonts lack are printed transliterated to Latin ones. The QR is an image of one
pixel per module, which PDF scales without interpolating, so its edges stay as sharp as the printer prints.

Segno encodes the QR in pure Python, and its mask selection (it scores all eight masks, as ISO/IEC 18004
asks) is most of the time a sheet takes: some 35 ms a voucher. Callers run `add` off the event loop.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import segno
from fpdf import FPDF
from unidecode import unidecode

from cbi_service.kit.money import format_amount

PAGE_WIDTH, PAGE_HEIGHT = 210.0, 297.0
COLUMNS, ROWS = 2, 4
VOUCHER_WIDTH, VOUCHER_HEIGHT = PAGE_WIDTH / COLUMNS, PAGE_HEIGHT / ROWS
PER_PAGE = COLUMNS * ROWS
QR_SIZE = 46.0
"""Millimetres, quiet zone included: a token of 77 modules gets modules of about 0.54 mm."""
QR_BORDER = 4
"""The quiet zone the standard asks for, in modules."""
PADDING = 6.0
"""Inside each voucher, wide enough for the edge no office printer reaches (4 to 6 mm)."""
TEXT_LEFT = PADDING + QR_SIZE + 3.0
TEXT_WIDTH = VOUCHER_WIDTH - TEXT_LEFT - PADDING
ELLIPSIS = "\u2026"
PROGRAMME_LINES = 2
ENCODING = "cp1252"
"""WinAnsiEncoding, which fpdf2 declares for the built-in fonts."""


@dataclass(frozen=True, slots=True)
class VoucherFace:
    """What one printed voucher shows."""

    token: str
    code: str
    amount_minor: int
    currency: str
    expires_at: datetime
    programme: str
    holder: str | None
    """Given names and family initial ("María José G."); None for a person whose data was erased."""


def printed_amount(minor: int, currency: str) -> str:
    """`150 000.00 COP`: the currency's own decimals, thousands set apart by spaces (read the same way in
    every locale, unlike a comma or a point)."""
    whole, point, fraction = format_amount(minor, currency).partition(".")
    return f"{int(whole):,}".replace(",", " ") + point + fraction + " " + currency


def printed_expiry(expires_at: datetime) -> str:
    return expires_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def printable(text: str) -> str:
    """The text in the characters the built-in fonts have, the others transliterated ("Ōsaka" → "Osaka")."""
    return "".join(ch if _in_winansi(ch) else unidecode(ch) for ch in text)


def _in_winansi(ch: str) -> bool:
    try:
        ch.encode(ENCODING)
    except UnicodeEncodeError:
        return False
    return True


def qr_png(token: str) -> io.BytesIO:
    qr = segno.make_qr(token, error="m")
    out = io.BytesIO()
    qr.save(out, kind="png", scale=1, border=QR_BORDER)
    out.seek(0)
    return out


class VoucherSheets:
    """A PDF of voucher sheets, filled a chunk of vouchers at a time."""

    def __init__(self, title: str) -> None:
        self._pdf = FPDF(orientation="portrait", unit="mm", format="A4")
        self._pdf.set_auto_page_break(auto=False)
        self._pdf.set_margin(0)
        self._pdf.core_fonts_encoding = ENCODING
        self._pdf.set_title(title)
        self._pdf.set_creator("cbi-service")
        self._pdf.set_creation_date(datetime.now(UTC))
        self.count = 0

    def add(self, faces: Iterable[VoucherFace]) -> None:
        for face in faces:
            slot = self.count % PER_PAGE
            if slot == 0:
                self._pdf.add_page()
                self._cut_lines()
            column, row = slot % COLUMNS, slot // COLUMNS
            self._voucher(face, column * VOUCHER_WIDTH, row * VOUCHER_HEIGHT)
            self.count += 1

    def output(self) -> bytes:
        return bytes(self._pdf.output())

    def _cut_lines(self) -> None:
        pdf = self._pdf
        pdf.set_draw_color(150)
        pdf.set_line_width(0.2)
        with pdf.local_context():
            pdf.set_dash_pattern(dash=2, gap=2)
            for column in range(1, COLUMNS):
                pdf.line(column * VOUCHER_WIDTH, 0, column * VOUCHER_WIDTH, PAGE_HEIGHT)
            for row in range(1, ROWS):
                pdf.line(0, row * VOUCHER_HEIGHT, PAGE_WIDTH, row * VOUCHER_HEIGHT)

    def _voucher(self, face: VoucherFace, x: float, y: float) -> None:
        pdf = self._pdf
        qr_top = y + (VOUCHER_HEIGHT - QR_SIZE) / 2
        pdf.image(qr_png(face.token), x=x + PADDING, y=qr_top, w=QR_SIZE, h=QR_SIZE)
        left = x + TEXT_LEFT
        top = y + PADDING + 2
        for line in self._wrapped(face.programme, "Helvetica", "B", 9, PROGRAMME_LINES):
            self._line(left, top, line, "Helvetica", "B", 9)
            top += 4
        top += 3
        self._label(left, top, "AMOUNT")
        self._line(left, top + 3, printed_amount(face.amount_minor, face.currency), "Helvetica", "B", 13)
        self._label(left, top + 12, "CODE")
        self._line(left, top + 15, face.code, "Courier", "B", 12)
        self._label(left, top + 24, "VALID UNTIL")
        self._line(left, top + 27, printed_expiry(face.expires_at), "Helvetica", "", 9)
        self._label(left, top + 35, "HOLDER")
        self._line(left, top + 38, face.holder or "-", "Helvetica", "", 10)

    def _wrapped(self, text: str, family: str, style: str, size: float, most: int) -> list[str]:
        """The text broken at spaces into lines of the text column, at most `most` of them (the last one cut
        where it runs over)."""
        self._pdf.set_font(family, style, size)
        lines: list[str] = []
        for word in printable(text).split():
            if lines and self._pdf.get_string_width(f"{lines[-1]} {word}") <= TEXT_WIDTH:
                lines[-1] = f"{lines[-1]} {word}"
            else:
                lines.append(word)
        if len(lines) > most:
            lines = [*lines[: most - 1], " ".join(lines[most - 1 :])]
        return [self._fitted(line) for line in lines]

    def _label(self, x: float, y: float, text: str) -> None:
        self._line(x, y, text, "Helvetica", "", 6, grey=110)

    def _line(self, x: float, y: float, text: str, family: str, style: str, size: float, grey: int = 0) -> None:
        pdf = self._pdf
        pdf.set_font(family, style, size)
        pdf.set_text_color(grey)
        pdf.set_xy(x, y)
        pdf.cell(TEXT_WIDTH, size * 0.45, self._fitted(printable(text)))

    def _fitted(self, text: str) -> str:
        """The text cut to the text column in the current font, with an ellipsis where it was cut."""
        if self._pdf.get_string_width(text) <= TEXT_WIDTH:
            return text
        while text and self._pdf.get_string_width(text + ELLIPSIS) > TEXT_WIDTH:
            text = text[:-1]
        return text.rstrip() + ELLIPSIS
