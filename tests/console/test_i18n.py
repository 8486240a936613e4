"""The Spanish catalogue covers every message the console marks, placeholder for placeholder, and the
language is chosen as browsers ask for it."""

from __future__ import annotations

import re

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from cbi_service.console import i18n
from cbi_service.kit.money import Money

CONSOLE = i18n.CATALOGUES.parent
PLACEHOLDER = re.compile(r"%\(([a-z_]+)\)s")


def _marked() -> set[str | tuple[str, str]]:
    """Every message of the console's Python and templates, as `pybabel extract` with babel.cfg finds them."""
    found: set[str | tuple[str, str]] = set()
    method_map = [("**.py", "python"), ("templates/**.html", "jinja2")]
    options = {"templates/**.html": {"extensions": "jinja2.ext.i18n", "trim_blocks": "true", "lstrip_blocks": "true"}}
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
    for _, _, message, _, _ in extract_from_dir(str(CONSOLE), method_map, options, keywords=keywords):
        found.add(message if isinstance(message, str) else (message[0], message[1]))
    return found


def test_every_marked_message_has_its_spanish_and_nothing_is_stale():
    with i18n.po_path("es").open("rb") as handle:
        catalogue = read_po(handle, locale="es")
    translated = {(m.id if isinstance(m.id, str) else tuple(m.id)): m.string for m in catalogue if m.id and not m.fuzzy}
    marked = _marked()
    assert len(marked) > 150, "the extraction found too little: the check would pass on nothing"
    missing = sorted(str(m) for m in marked if not translated.get(m))
    assert not missing, f"messages without a Spanish translation (see the .po header to update it): {missing}"
    stale = sorted(str(m) for m in set(translated) - marked)
    assert not stale, f"translations of messages no longer used: {stale}"
    for message, translation in translated.items():
        sources = message if isinstance(message, tuple) else (message,)
        targets = translation if isinstance(translation, tuple) else (translation,)
        for target in targets:
            assert set(PLACEHOLDER.findall(target)) == set(PLACEHOLDER.findall(sources[-1])), (message, target)


@pytest.mark.parametrize(
    ("chosen", "header", "language"),
    [
        (None, "es-CO,es;q=0.9,en;q=0.8", "es"),
        (None, "es-VE", "es"),
        (None, "fr-FR, en;q=0.5, es;q=0.4", "en"),
        (None, "pt-BR, es;q=0.7", "es"),
        (None, "de", "en"),
        (None, None, "en"),
        (None, "es;q=0, en;q=0.1", "en"),
        (None, "en;q=nonsense, es;q=0.2", "es"),
        ("en", "es", "en"),
        ("fr", "es", "es"),
    ],
)
def test_the_language_is_the_visitors_choice_then_the_browsers(chosen, header, language):
    assert i18n.choose_language(chosen, header) == language


def test_money_keeps_its_digits_in_each_language():
    assert i18n.money(Money(amount="1234567.80", currency="COP"), "es") == "1.234.567,80 COP"
    assert i18n.money(Money(amount="1234567.80", currency="COP"), "en") == "1,234,567.80 COP"
    assert i18n.money(Money(amount="1500", currency="CLP"), "es") == "1.500 CLP"
    assert i18n.money(Money(amount="0.125", currency="KWD"), "en") == "0.125 KWD"
