"""How two people's records differ, field by field, as the agreement levels the match model weighs.

Each comparison sorts a pair of records into one of a few levels, strongest agreement first; level 0 is
"nothing to compare" (a field missing on either side), which weighs nothing. The same Python functions
decide the levels online (a registration against its candidates), when the model is trained and in
registry-wide sweeps (registered as SQL functions of the engine), so a pair lands on the same level
everywhere and the learned weights mean the same thing in each place.

The levels follow how records of one person really differ in the field: accents, typos and spellings
that sound alike; a second given name or surname left out; initials for given names; given and family
names exchanged; day and month swapped; a document number with one digit mistyped, dropped or two digits
transposed; a second document of the same type. What separates different people is kept apart too:
Daniel/Daniela, siblings sharing surnames, namesakes born in other years.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

from rapidfuzz.distance import OSA

from cbi_service.dedup.normalize import MatchRecord, spanish_phonetic

TOKEN_MATCH = 0.8  # token similarity from which two name tokens are taken as "the same name, maybe misspelt"


@dataclass(frozen=True, slots=True)
class Comparison:
    """One field comparison: its name (as in explanations) and its levels, index 0 being "not compared"."""

    name: str
    levels: tuple[str, ...]
    tf_level: int | None = None  # the level whose weight is adjusted by how common the name is

    def level(self, label: str) -> int:
        return self.levels.index(label)


GIVEN = Comparison(
    "given_names",
    ("missing", "exact", "typo", "missing_name", "initials", "partial", "different"),
    tf_level=1,
)
FAMILY = Comparison(
    "family_names",
    ("missing", "exact", "typo", "missing_surname", "partial", "different"),
    tf_level=1,
)
BIRTH = Comparison(
    "date_of_birth",
    (
        "missing",
        "exact",
        "exact_1_january",
        "day_month_swapped",
        "one_digit",
        "1_january_same_year",
        "same_year",
        "within_2_years",
        "different",
    ),
)
DOCUMENT = Comparison(
    "documents",
    ("missing", "same_number", "one_edit", "two_edits", "other_number_same_type"),
)
SEX = Comparison("sex", ("missing", "same", "different"))
NATIONALITY = Comparison("nationality", ("missing", "same", "different"))

# The phone is not compared: a household shares one, and phones change hands, so agreement says "same
# family" (already said by the surnames) far more than "same person". It still brings in candidates.
COMPARISONS: tuple[Comparison, ...] = (GIVEN, FAMILY, BIRTH, DOCUMENT, SEX, NATIONALITY)


def _gender_variant(a: str, b: str) -> bool:
    """Daniel/Daniela, Mario/Maria, Luis/Luisa: one letter apart but different people (often siblings).

    The feminine adds an "a" to a masculine that ends in a consonant; "Maria"/"Mariaa" is a typo."""
    if len(a) != len(b):
        short, long_ = sorted((a, b), key=len)
        return long_ == short + "a" and short[-1] not in "aeiou"
    return a[:-1] == b[:-1] and {a[-1], b[-1]} == {"a", "o"}


@lru_cache(maxsize=1 << 17)
def token_similarity(a: str, b: str, gendered: bool = True) -> float:
    """Similarity of two folded name tokens in 0..1; at or above TOKEN_MATCH they are the same name.

    One edit (a transposition counts as one) is a typo from four letters on, counting the longer token
    when a letter was left out or added (Jose/Jse, Gil/Gill), two edits from ten letters on
    (Bernardo/Leonardo are two names); names that sound alike in Spanish are the same name. With
    `gendered` (given names of people whose sexes differ or are not both known) the masculine and feminine
    forms of a name are not: Daniel and Daniela are a brother and a sister, but two women's records with
    Daniel and Daniela are one letter left out. Cached: common names are compared with each other over
    and over.
    """
    if a == b:
        return 1.0
    if gendered and _gender_variant(a, b):
        return 0.3
    if spanish_phonetic(a) == spanish_phonetic(b):
        return 0.95
    distance = OSA.distance(a, b)
    shortest, longest = sorted((len(a), len(b)))
    if (distance == 1 and shortest >= 3 and longest >= 4) or (distance == 2 and shortest >= 10):
        return 0.85
    return min(float(OSA.normalized_similarity(a, b)), TOKEN_MATCH - 0.05)


def _initial_of(a: str, b: str) -> bool:
    """One token is the initial of the other ("j" and "jose")."""
    return (len(a) == 1) != (len(b) == 1) and a[0] == b[0]


def _align(left: tuple[str, ...], right: tuple[str, ...], gendered: bool) -> list[tuple[float, int, int]]:
    """Best one-to-one pairing of tokens, order ignored (greedy: lists are tiny): (similarity, i, j). Between
    equally good pairings the earlier tokens pair first, so "Martínez" against "Martínez Martínez" is the
    first surname with the second left out."""
    pairs = sorted(
        [(token_similarity(a, b, gendered), i, j) for i, a in enumerate(left) for j, b in enumerate(right)],
        key=lambda p: (-p[0], p[1], p[2]),
    )
    used_left: set[int] = set()
    used_right: set[int] = set()
    aligned: list[tuple[float, int, int]] = []
    for similarity, i, j in pairs:
        if i in used_left or j in used_right:
            continue
        used_left.add(i)
        used_right.add(j)
        aligned.append((similarity, i, j))
    return aligned


def _initials_for_the_rest(
    left: tuple[str, ...], right: tuple[str, ...], matched: list[tuple[float, int, int]]
) -> bool:
    """Every name of the shorter side left unmatched is the initial of a different unmatched name of the
    other side: "María J" for "María José", and "Octavio T" for "Octavio Thiago Lionel"."""
    flip = len(left) > len(right)
    short, long_ = (right, left) if flip else (left, right)
    taken_short = {j if flip else i for _, i, j in matched}
    taken_long = {i if flip else j for _, i, j in matched}
    free = [t for k, t in enumerate(long_) if k not in taken_long]
    rest = [t for k, t in enumerate(short) if k not in taken_short]
    if not rest or (not matched and len(short) != len(long_)):  # "Olivia" is no initial of "Prieto O"
        return False
    for token in rest:
        partner = next((t for t in free if _initial_of(token, t)), None)
        if partner is None:
            return False
        free.remove(partner)
    return True


def _name_level(left: tuple[str, ...], right: tuple[str, ...], *, given: bool, gendered: bool = False) -> str:
    """Agreement of two name lists, robust to order, a missing name and (for `given` names) initials.

    When one side has fewer names it matters whether they include the other's first one: "José" against
    "José Manuel" is usually one man written short, "José" against "Benjamín José" may be his brother.
    Given names that share one name while each has another the other lacks ("Juan David", "Juan Diego")
    are two people, twins or brothers named alike: one person's records leave a name out or shorten it to
    an initial, they do not swap it for another. Two surnames sharing one ("García Pérez", "García López")
    stay partial: one person's second surname changes with marriage or between registries.
    """
    if not left or not right:
        return "missing"
    if left == right:
        return "exact"
    if "".join(left) == "".join(right):  # a space typed or left out: "Mari Carmen", "Maricarmen"
        return "typo"
    if len(left) == 1 and len(right) == 1:  # most names: one token each
        return "typo" if token_similarity(left[0], right[0], gendered) >= TOKEN_MATCH else "different"
    aligned = _align(left, right, gendered)
    matched = [(s, i, j) for s, i, j in aligned if s >= TOKEN_MATCH]
    if given and _initials_for_the_rest(left, right, matched):
        return "initials"
    if not matched:
        return "different"
    if len(matched) < min(len(left), len(right)):
        return "different" if given else "partial"
    if len(left) != len(right):
        return "missing_name" if any(i == 0 and j == 0 for _, i, j in matched) else "partial"
    return "exact" if all(s == 1.0 for s, _, _ in matched) else "typo"


def _family_level(left: tuple[str, ...], right: tuple[str, ...]) -> str:
    level = _name_level(left, right, given=False)
    return "missing_surname" if level == "missing_name" else level


def _digits(day: date) -> str:
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def _birth_level(left: date, right: date) -> str:
    if left == right:
        return "exact_1_january" if (left.month, left.day) == (1, 1) else "exact"
    if (left.year, left.month, left.day) == (right.year, right.day, right.month):
        return "day_month_swapped"
    near = abs(left.year - right.year) <= 2 and abs((left - right).days) <= 2 * 366
    if (near or left.month == right.month or left.day == right.day) and OSA.distance(
        _digits(left), _digits(right), score_cutoff=1
    ) <= 1:
        return "one_digit"
    if left.year == right.year:
        # 1 January is what many desks write when only the year of birth is known.
        return "1_january_same_year" if (1, 1) in ((left.month, left.day), (right.month, right.day)) else "same_year"
    return "within_2_years" if near else "different"


def _document_level(left: MatchRecord, right: MatchRecord) -> str:
    """The closest pair of documents: the same number (of any type), or numbers of the same type and country
    one or two edits apart (a transposition is one), or two different documents of the same type."""
    best = len(DOCUMENT.levels)
    for mine in left.documents:
        for theirs in right.documents:
            if mine.number == theirs.number:
                return "same_number"
            if (mine.type, mine.country) != (theirs.type, theirs.country):
                continue
            distance = OSA.distance(mine.number, theirs.number, score_cutoff=2)
            level = DOCUMENT.level(
                "one_edit" if distance == 1 else "two_edits" if distance == 2 else "other_number_same_type"
            )
            best = min(best, level)
    return DOCUMENT.levels[best] if best < len(DOCUMENT.levels) else "missing"


def _same_or_different(left: str | None, right: str | None) -> str:
    if not left or not right:
        return "missing"
    return "same" if left == right else "different"


KNOWN_SEXES = frozenset({"female", "male"})

# Strength of each name level when choosing between the straight and the exchanged reading of the names.
_NAME_RANK = {"exact": 5, "typo": 4, "missing_name": 3, "missing_surname": 3, "initials": 3, "partial": 1}


@dataclass(frozen=True, slots=True)
class Gammas:
    """The level of every comparison for one pair, in COMPARISONS order, and whether names were exchanged."""

    levels: tuple[int, ...]
    names_exchanged: bool = False

    def label(self, index: int) -> str:
        return COMPARISONS[index].levels[self.levels[index]]


def name_levels(probe: MatchRecord, candidate: MatchRecord) -> tuple[str, str, bool]:
    """(given level, family level, exchanged): the better of the straight reading and the one with the
    candidate's given and family names exchanged (a clerk who typed them into the wrong boxes).

    Masculine and feminine forms are told apart in given names only (surnames have none), and only unless
    both records give the same sex."""
    gendered = not (probe.sex in KNOWN_SEXES and probe.sex == candidate.sex)
    straight = (
        _name_level(probe.given, candidate.given, given=True, gendered=gendered),
        _family_level(probe.family, candidate.family),
    )
    rank = _NAME_RANK.get(straight[0], 0) + _NAME_RANK.get(straight[1], 0)
    if rank >= 8:  # both fields agree, at least with a typo: exchanging them cannot do better
        return (*straight, False)
    swapped = (
        _name_level(probe.given, candidate.family, given=True, gendered=gendered),
        _family_level(probe.family, candidate.given),
    )
    if _NAME_RANK.get(swapped[0], 0) + _NAME_RANK.get(swapped[1], 0) > rank:
        return (*swapped, True)
    return (*straight, False)


def gammas(probe: MatchRecord, candidate: MatchRecord) -> Gammas:
    """Every comparison's level for one pair."""
    given, family, exchanged = name_levels(probe, candidate)
    sexes = (probe.sex if probe.sex in KNOWN_SEXES else None, candidate.sex if candidate.sex in KNOWN_SEXES else None)
    return Gammas(
        (
            GIVEN.level(given),
            FAMILY.level(family),
            BIRTH.level(_birth_level(probe.date_of_birth, candidate.date_of_birth)),
            DOCUMENT.level(_document_level(probe, candidate)),
            SEX.level(_same_or_different(*sexes)),
            NATIONALITY.level(_same_or_different(probe.nationality, candidate.nationality)),
        ),
        exchanged,
    )


def same_document(probe: MatchRecord, candidate: MatchRecord) -> bool:
    """The same number of a document of the same type and country: one person, whatever else differs."""
    theirs = set(candidate.documents)
    return any(document in theirs for document in probe.documents)


@lru_cache(maxsize=1 << 16)
def _record(profile: str) -> MatchRecord:
    return MatchRecord.from_profile(json.loads(profile))


@lru_cache(maxsize=1 << 16)
def sql_levels(left: str, right: str) -> str:
    """Every comparison's level for two stored profiles (JSON text), one digit each in COMPARISONS order.

    SQL engines call it from every level of every comparison, some twenty times per pair over a chunk of
    pairs; the cache makes all but the first a lookup."""
    return "".join(str(level) for level in gammas(_record(left), _record(right)).levels)
