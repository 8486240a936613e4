"""Spanish and English: the language from the browser (Accept-Language) unless the visitor chose one, the
catalogues read from their `.po` files at start (Babel compiles them in memory: no build step), and
numbers, money and times written as each language writes them."""

from __future__ import annotations

import io
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

from babel.core import negotiate_locale
from babel.dates import format_datetime
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.support import NullTranslations, Translations

from cbi_service.kit.money import Money

LANGUAGES = ("es", "en")
"""What the console speaks; English is the language its messages are written in."""
DEFAULT_LANGUAGE = "en"
LANGUAGE_COOKIE = "cbi_console_lang"
CATALOGUES = Path(__file__).parent / "i18n"
DOMAIN = "messages"


def po_path(language: str) -> Path:
    return CATALOGUES / language / "LC_MESSAGES" / f"{DOMAIN}.po"


@lru_cache(maxsize=len(LANGUAGES))
def translations(language: str) -> NullTranslations:
    """The language's catalogue, compiled from its `.po` in memory; English needs none."""
    path = po_path(language)
    if not path.exists():
        return NullTranslations()
    with path.open("rb") as handle:
        catalog = read_po(handle, locale=language)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def choose_language(chosen: str | None, accept_language: str | None) -> str:
    """The visitor's choice if it is one we speak, else the best match of the browser's languages."""
    if chosen in LANGUAGES:
        return str(chosen)
    # Tags in order of preference; "es-VE" matches "es" (Babel tries the language alone too).
    return negotiate_locale(_preferences(accept_language or ""), LANGUAGES, sep="-") or DEFAULT_LANGUAGE


def _preferences(header: str) -> list[str]:
    """Accept-Language's tags, best first (RFC 9110 §12.5.4); unreadable weights count as 0."""
    weighted: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        if tag and tag != "*" and quality > 0:
            weighted.append((-quality, index, tag.strip()))
    return [tag for _, _, tag in sorted(weighted)]


def money(value: Money | Mapping[str, str] | None, language: str) -> str:
    """ "150.000,00 COP" or "150,000.00 COP": the amount's own digits (ISO 4217), never rounded."""
    if value is None:
        return ""
    amount, currency = (
        (value.amount, value.currency) if isinstance(value, Money) else (value["amount"], value["currency"])
    )
    digits = len(amount.partition(".")[2])
    pattern = "#,##0" + ("." + "0" * digits if digits else "")
    return f"{format_decimal(Decimal(amount), format=pattern, locale=language)} {currency}"


def number(value: int | float | None, language: str) -> str:
    return "" if value is None else format_decimal(value, locale=language)


def when(value: datetime | None, language: str) -> str:
    """A time in UTC, the medium form of the language, marked as UTC."""
    if value is None:
        return ""
    return format_datetime(value.astimezone(UTC), "medium", tzinfo=UTC, locale=language) + " UTC"


def N_(message: str) -> str:
    """Marks a message for the catalogue where it is defined; it is translated where it is shown."""
    return message


SERVICE_MESSAGES = (
    N_("The batch's creator cannot approve or reject it."),
    N_("This approver has already decided on the batch."),
    N_("Whoever created or approved a batch cannot release it."),
    N_("Nobody may decide on a record they registered or corrected."),
    N_("Payment batch not found."),
    N_("Adjudication not found."),
    N_("Import not found."),
    N_("Programme not found."),
    N_("Empty file."),
    N_("the file is empty"),
)
"""What the domain services answer that a console visitor meets most, in the catalogue so that it is shown
in the visitor's language; any other message is shown as the service wrote it."""
