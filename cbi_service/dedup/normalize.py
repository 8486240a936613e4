"""Name normalisation and Spanish phonetic keys for matching people.

Registration clerks in the region write the same person many ways: with or without accents, with the
particles of compound surnames ("de la Cruz"), with one or both surnames, surnames in either order, given
and family names in the wrong fields, and names transliterated from other scripts. Matching therefore works
on folded tokens and on a phonetic key built for Spanish spelling, never on the raw strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any

from unidecode import unidecode

# Particles of compound Spanish/Portuguese/Dutch-origin surnames and the conjunction "y" that some records
# keep ("Ortega y Gasset"). They carry no identity and are written inconsistently, so matching ignores them.
PARTICLES = frozenset(
    {
        "de",
        "del",
        "la",
        "las",
        "los",
        "lo",
        "el",
        "y",
        "e",
        "i",
        "da",
        "das",
        "do",
        "dos",
        "di",
        "du",
        "van",
        "von",
        "der",
        "den",
        "ter",
    }
)

_NON_LETTER = re.compile(r"[^a-z]+")


def fold(text: str) -> str:
    """Transliterate to ASCII, lower-case and keep only letters separated by single spaces.

    unidecode both removes accents (Núñez -> nunez) and transliterates other scripts (Cyrillic, Arabic),
    so one folded form serves every registration tool's keyboard.
    """
    folded = unidecode(text).lower().replace("'", "")
    return _NON_LETTER.sub(" ", folded).strip()


def name_tokens(text: str) -> tuple[str, ...]:
    """Folded tokens of a name field without particles ("De la Cruz" -> ("cruz",)).

    A name made only of particles (rare, but "Da" exists as a given name) is kept as is rather than
    erased.
    """
    tokens = fold(text).split()
    kept = tuple(t for t in tokens if t not in PARTICLES)
    return kept or tuple(tokens)


# Ordered rewrites applied to a folded token before the letter-by-letter pass. Each one maps spellings that
# sound the same in Latin American Spanish to a single form.
_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"ph", "f"),  # transliterations: Stephany / Estefany
        (r"^es(?=[^aeiou])", "s"),  # the e Spanish speakers put before s+consonant: Estefany / Stefany
        (r"th", "t"),  # Jhonathan / Jonatan
        (r"sch", "s"),
        (r"^x(?=[aeiou])", "j"),  # Ximena / Jimena, Xavier / Javier
        (r"x", "s"),  # Mexican and Andean x in the middle of words is spoken as s or j; s is most common
        (r"ch", "1"),  # keep ch distinct from c/k before the c rules run
        (r"ll", "y"),  # yeísmo: Castillo / Castiyo
        (r"qu(?=[ei])", "k"),
        (r"q", "k"),
        (r"gu(?=[ei])", "2"),  # Guillermo, Agüero: hard g, kept apart from the soft g below
        (r"g(?=[ei])", "j"),  # Gerardo / Jerardo
        (r"c(?=[ei])", "s"),  # seseo: Cecilia / Sesilia
        (r"c", "k"),
        (r"z", "s"),
        (r"v", "b"),  # betacismo: Valentina / Balentina
        (r"w", "u"),  # Wilmer / Uilmer, Walter / Gualter sounds close enough after g drop below
        (r"^gu(?=[aeiou])", "u"),  # Gualter / Walter
        (r"h", ""),  # h is silent (the ch digraph was protected above)
        (r"y(?![aeiou])", "i"),  # final or pre-consonant y is a vowel: Eloy / Eloi
        (r"n(?=[bp])", "m"),  # Enbrique / Embrique, spelling-independent nasal
    )
)


@lru_cache(maxsize=65536)
def spanish_phonetic(token: str) -> str:
    """Phonetic code of one folded name token ("fonético" key tuned to Latin American Spanish).

    It merges the spellings people mix up when writing a name they heard: b/v, c/s/z (seseo), ll/y
    (yeísmo), silent h, qu/k, g/j before e/i, x as j or s, ñ written as n, ph/th from transliterations,
    and doubled letters. Vowels are kept (apart from a vocalic y) because in Spanish they are stable
    and they keep the key selective. Not a replacement for fuzzy scoring: it only groups candidates.
    """
    word = fold(token).replace(" ", "")
    for pattern, replacement in _REWRITES:
        word = pattern.sub(replacement, word)
    code: list[str] = []
    for char in word:
        if code and code[-1] == char:
            continue
        code.append(char)
    return "".join(code).replace("1", "ch").replace("2", "g")


def phonetic_tokens(tokens: tuple[str, ...]) -> tuple[str, ...]:
    """Phonetic codes of several tokens, in order."""
    return tuple(spanish_phonetic(t) for t in tokens)


@dataclass(frozen=True, slots=True)
class DocumentKey:
    """A document reduced to what identifies it: type, issuing country and canonical number."""

    type: str
    country: str
    number: str


@dataclass(frozen=True, slots=True)
class MatchRecord:
    """Everything dedup compares about a person, already normalised.

    Built once per registration and stored (as `to_profile()`) next to the beneficiary, so that scoring a
    candidate never has to re-read or re-parse its raw fields.
    """

    given: tuple[str, ...]
    family: tuple[str, ...]
    date_of_birth: date
    sex: str = "unknown"
    nationality: str | None = None
    documents: tuple[DocumentKey, ...] = ()
    phone: str | None = None

    @property
    def given_phonetic(self) -> tuple[str, ...]:
        return phonetic_tokens(self.given)

    @property
    def family_phonetic(self) -> tuple[str, ...]:
        return phonetic_tokens(self.family)

    def to_profile(self) -> dict[str, Any]:
        """JSON-serialisable form kept in the database for candidate scoring."""
        return {
            "g": list(self.given),
            "f": list(self.family),
            "b": self.date_of_birth.isoformat(),
            "s": self.sex,
            "n": self.nationality,
            "d": [[d.type, d.country, d.number] for d in self.documents],
            "p": self.phone,
        }

    @classmethod
    def from_profile(cls, profile: dict[str, Any]) -> MatchRecord:
        return cls(
            given=tuple(profile["g"]),
            family=tuple(profile["f"]),
            date_of_birth=date.fromisoformat(profile["b"]),
            sex=profile["s"],
            nationality=profile["n"],
            documents=tuple(DocumentKey(t, c, n) for t, c, n in profile["d"]),
            phone=profile["p"],
        )


def build_record(
    *,
    given_names: str,
    family_names: str,
    date_of_birth: date,
    sex: str = "unknown",
    nationality: str | None = None,
    documents: tuple[DocumentKey, ...] = (),
    phone: str | None = None,
) -> MatchRecord:
    """Match record from already validated registration fields (documents and phone in canonical form)."""
    return MatchRecord(
        given=name_tokens(given_names),
        family=name_tokens(family_names),
        date_of_birth=date_of_birth,
        sex=sex,
        nationality=nationality.upper() if nationality else None,
        documents=tuple(dict.fromkeys(documents)),
        phone=phone,
    )
