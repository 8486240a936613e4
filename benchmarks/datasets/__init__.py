"""Labelled data sets for the dedup quality benchmark, as registrations the API takes.

Every loader returns `Record`s: the JSON body of one `POST /v1/beneficiaries`, who the record really is
(`entity`), what part it plays (`role`) and, for generated duplicates, how it was corrupted (`kinds`).
Labels are used only to count outcomes; the API never sees them.

`differences` says how two registrations differ field by field, in levels and never in values, so that an
error can be explained without printing a name, a document or a date.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rapidfuzz.distance import OSA
from unidecode import unidecode

CONSENT = {"given": True, "date": "2026-11-01", "purpose": "dedup quality benchmark"}


@dataclass(frozen=True)
class Record:
    """One registration and its label.

    `role` is `original` or `duplicate` for records of a labelled pair; generated confusers (people easy to
    take for someone else: `sibling`, `twin`, `namesake`, `junior`) carry their own role. `kinds` lists the
    corruptions a generated duplicate went through; FEBRL does not say, so there it is empty.
    """

    entity: str
    role: str
    body: dict[str, Any]
    kinds: tuple[str, ...] = field(default=())


def registration(
    *,
    given_names: str | None,
    family_names: str | None,
    date_of_birth: str | None,
    sex: str,
    nationality: str,
    documents: list[dict[str, str]],
    phone: str | None,
    location: dict[str, str],
    household_size: int = 1,
) -> dict[str, Any]:
    """A registration body; a missing name or birth date is left out, for the API to refuse."""
    body: dict[str, Any] = {
        "sex": sex,
        "nationality": nationality,
        "documents": documents,
        "location": location,
        "household_size": household_size,
        "consent": CONSENT,
    }
    for name, value in (
        ("given_names", given_names),
        ("family_names", family_names),
        ("date_of_birth", date_of_birth),
        ("phone", phone),
    ):
        if value:
            body[name] = value
    return body


_PUNCTUATION = re.compile(r"[^a-z0-9 ]+")


def fold(text: str | None) -> str:
    """Lower case ASCII words: what a reader would still call the same spelling."""
    return " ".join(_PUNCTUATION.sub(" ", unidecode(text or "").lower()).split())


def _name_level(a: str | None, b: str | None) -> str:
    if not a or not b:
        return "missing"
    if a == b:
        return "exact"
    fa, fb = fold(a), fold(b)
    if fa == fb:
        return "accents_case"
    ta, tb = fa.split(), fb.split()
    if sorted(ta) == sorted(tb):
        return "reordered"
    short, long_ = (ta, tb) if len(ta) <= len(tb) else (tb, ta)
    if Counter(short) < Counter(long_):
        return "token_missing"
    if any(len(s) == 1 for s in short) and all(
        s == t or (len(s) == 1 and t.startswith(s)) for s, t in zip(short, long_, strict=False)
    ):
        return "initials"
    distance = OSA.distance(fa, fb)
    if distance == 1:
        return "typo"
    if distance == 2:
        return "two_typos"
    if any(OSA.distance(s, t) <= 1 for s in short for t in long_ if min(len(s), len(t)) > 3):
        return "one_token_close"
    return "different"


def _birth_level(a: str | None, b: str | None) -> str:
    if not a or not b:
        return "missing"
    if a == b:
        return "exact"
    ya, ma, da = a.split("-")
    yb, mb, db = b.split("-")
    if ya == yb and (ma, da) == (db, mb):
        return "day_month_swapped"
    if ya == yb and "01-01" in (f"{ma}-{da}", f"{mb}-{db}"):
        return "january_first"
    if sum(x != y for x, y in zip(a, b, strict=True)) == 1:
        return "one_digit"
    if ya == yb:
        return "same_year"
    return "different"


def _document_key(doc: Mapping[str, str]) -> str:
    compact = re.sub(r"[^A-Z0-9]", "", doc["number"].upper())
    if (doc["type"], doc["issuing_country"]) == ("national_id", "VE"):
        compact = compact.lstrip("VE")
    return compact.lstrip("0") if compact.isdigit() else compact


def _number_level(a: str, b: str) -> str:
    if a == b:
        return "exact"
    if len(a) == len(b):
        diffs = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
        if len(diffs) == 1:
            return "one_digit"
        if len(diffs) == 2 and diffs[1] == diffs[0] + 1 and a[diffs[0]] == b[diffs[1]] and a[diffs[1]] == b[diffs[0]]:
            return "transposed"
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    if len(long_) == len(short) + 1 and any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_))):
        return "digit_dropped"
    return "other_number"


_DOCUMENT_ORDER = ("exact", "one_digit", "transposed", "digit_dropped", "other_number")


def _document_level(a: list[Mapping[str, str]], b: list[Mapping[str, str]]) -> str:
    if not a and not b:
        return "none"
    if not a or not b:
        return "missing"
    best = None
    for x in a:
        for y in b:
            if (x["type"], x["issuing_country"]) != (y["type"], y["issuing_country"]):
                continue
            level = _number_level(_document_key(x), _document_key(y))
            if best is None or _DOCUMENT_ORDER.index(level) < _DOCUMENT_ORDER.index(best):
                best = level
    if best is None:
        return "other_type"
    return "other_same_type" if best == "other_number" else best


def _phone_level(a: str | None, b: str | None) -> str:
    if not a and not b:
        return "none"
    if not a or not b:
        return "missing"
    da, db = re.sub(r"\D", "", a), re.sub(r"\D", "", b)
    return "exact" if da[-7:] == db[-7:] else "different"


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, str]:
    """How registration `a` differs from `b`, field by field, as levels (no values).

    Names exchanged between the two fields are recognised as `swapped:<level>` on both.
    """
    given = _name_level(a.get("given_names"), b.get("given_names"))
    family = _name_level(a.get("family_names"), b.get("family_names"))
    if {given, family} - {"exact", "accents_case"}:
        crossed = (
            _name_level(a.get("given_names"), b.get("family_names")),
            _name_level(a.get("family_names"), b.get("given_names")),
        )
        if all(level not in {"different", "missing", "one_token_close"} for level in crossed):
            given, family = (f"swapped:{level}" for level in crossed)
    return {
        "given": given,
        "family": family,
        "birth": _birth_level(a.get("date_of_birth"), b.get("date_of_birth")),
        "document": _document_level(a.get("documents", []), b.get("documents", [])),
        "phone": _phone_level(a.get("phone"), b.get("phone")),
        "sex": "exact" if a.get("sex") == b.get("sex") else "different",
    }


def summary(levels: Mapping[str, str]) -> str:
    """The fields that differ, as `given: typo, birth: day_month_swapped`; `identical` when none does."""
    shown = [f"{name}: {level}" for name, level in levels.items() if level not in {"exact", "none"}]
    return ", ".join(shown) or "identical"
