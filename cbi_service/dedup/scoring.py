"""Field-by-field comparison of two people, combined into one score in 0..1.

Each field comparison falls into an agreement level that carries a log-odds weight (Fellegi-Sunter style):
agreement on a rare kind of evidence (both surnames, the exact birth date) adds much, disagreement on a
field that rarely changes for one person (given name, birth year, a document of the same type) subtracts
much. The sum plus a prior is turned into a probability-like score with the logistic function, so the
thresholds in settings read as "how sure must we be".

Weights were set from what distinguishes true duplicates from the people most often confused with them:
namesakes (same common name, other birth date), siblings and twins (same surnames, phone and household),
and cousins (one shared surname).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from datetime import date
from enum import Enum
from functools import lru_cache
from typing import Generic, Literal, TypeVar

from rapidfuzz.distance import OSA

from cbi_service.dedup.normalize import MatchRecord, spanish_phonetic
from cbi_service.dedup.settings import DedupSettings

K = TypeVar("K", bound=Hashable)
DedupStatus = Literal["unique", "duplicate", "possible_duplicate"]

PRIOR = -5.0  # log-odds that two people sharing a blocking key are the same person, before any evidence
TOKEN_MATCH = 0.8  # token similarity from which two name tokens are taken as "the same name, maybe misspelt"


class Level(Enum):
    EXACT = "exact"
    TYPO = "typo"
    SUBSET = "subset"  # one side has fewer names, all agree, the first ones included (missing second name)
    LOOSE_SUBSET = "loose_subset"  # all of the fewer names agree, but not with the other's first name
    PARTIAL = "partial"  # some names agree, others clearly differ (siblings, cousins)
    DIFFERENT = "different"
    UNKNOWN = "unknown"


GIVEN_WEIGHTS = {
    Level.EXACT: 4.0,
    Level.SUBSET: 3.0,
    Level.LOOSE_SUBSET: -2.0,  # "Luis" vs "Jhon Luis": as often a brother as the same man
    Level.TYPO: 2.5,
    Level.PARTIAL: -5.0,
    Level.DIFFERENT: -8.0,
    Level.UNKNOWN: 0.0,
}
FAMILY_WEIGHTS = {
    Level.EXACT: 5.0,
    Level.TYPO: 3.5,
    Level.SUBSET: 2.5,
    Level.LOOSE_SUBSET: 2.0,
    Level.PARTIAL: -4.0,
    Level.DIFFERENT: -8.0,
    Level.UNKNOWN: 0.0,
}


def _gender_variant(a: str, b: str) -> bool:
    """Daniel/Daniela, Mario/Maria, Luis/Luisa: one letter apart but different people (often siblings)."""
    if len(a) != len(b):
        short, long_ = sorted((a, b), key=len)
        return long_ == short + "a"
    return a[:-1] == b[:-1] and {a[-1], b[-1]} == {"a", "o"}


@lru_cache(maxsize=1 << 17)
def token_similarity(a: str, b: str) -> float:
    """Similarity of two folded name tokens in 0..1; at or above TOKEN_MATCH they are the same name.

    One edit (a transposition counts as one) is a typo from four letters on, two edits from ten letters on
    (Bernardo/Leonardo are two names); names that sound alike in Spanish are the same name;
    masculine/feminine forms of a name are not. Cached: names repeat (a bulk file compares the same common
    names thousands of times), and a pair's similarity never changes.
    """
    if a == b:
        return 1.0
    if _gender_variant(a, b):
        return 0.3
    if spanish_phonetic(a) == spanish_phonetic(b):
        return 0.95
    distance = OSA.distance(a, b)
    shortest = min(len(a), len(b))
    if (distance == 1 and shortest >= 4) or (distance == 2 and shortest >= 10):
        return 0.85
    return min(float(OSA.normalized_similarity(a, b)), TOKEN_MATCH - 0.05)


def _align(left: tuple[str, ...], right: tuple[str, ...]) -> list[tuple[float, int, int]]:
    """Best one-to-one pairing of tokens, order ignored (greedy: lists are tiny): (similarity, i, j)."""
    pairs = sorted(
        ((token_similarity(a, b), i, j) for i, a in enumerate(left) for j, b in enumerate(right)),
        reverse=True,
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


def compare_names(left: tuple[str, ...], right: tuple[str, ...]) -> Level:
    """Agreement level of two name lists (given names or surnames), robust to order and a missing name.

    When one side has fewer names, it matters whether they include the other's first one: "José" against
    "José Manuel" is usually one man written short, "José" against "Benjamín José" may be his brother.
    """
    if not left or not right:
        return Level.UNKNOWN
    matched = [(s, i, j) for s, i, j in _align(left, right) if s >= TOKEN_MATCH]
    if not matched:
        return Level.DIFFERENT
    if len(matched) < min(len(left), len(right)):
        return Level.PARTIAL
    if len(left) != len(right):
        firsts_agree = any(i == 0 and j == 0 for _, i, j in matched)
        return Level.SUBSET if firsts_agree else Level.LOOSE_SUBSET
    return Level.EXACT if all(s == 1.0 for s, _, _ in matched) else Level.TYPO


class DateLevel(Enum):
    EXACT = "exact"
    DAY_MONTH_SWAPPED = "day_month_swapped"
    TYPO = "typo"
    NEAR = "near"
    DIFFERENT = "different"


DATE_WEIGHTS = {
    DateLevel.EXACT: 5.0,
    DateLevel.DAY_MONTH_SWAPPED: 3.5,
    DateLevel.TYPO: -0.5,  # one digit off: as likely a namesake as a typo, so it never decides alone
    DateLevel.NEAR: -3.0,
    DateLevel.DIFFERENT: -8.0,
}
# 1 January is what registration offices write when only the year is known, so agreeing on it proves less.
CONVENTIONAL_DATE_WEIGHT = 2.5


def compare_dates(left: date, right: date) -> DateLevel:
    """Birth-date agreement, tolerant to day/month swaps and to one mistyped or transposed digit."""
    if left == right:
        return DateLevel.EXACT
    if (left.year, left.month, left.day) == (right.year, right.day, right.month):
        return DateLevel.DAY_MONTH_SWAPPED
    if OSA.distance(left.strftime("%Y%m%d"), right.strftime("%Y%m%d")) <= 1:
        return DateLevel.TYPO
    if abs((left - right).days) <= 2 * 366:
        return DateLevel.NEAR
    return DateLevel.DIFFERENT


@dataclass(frozen=True, slots=True)
class Comparison:
    """Outcome of comparing a registration with one candidate."""

    score: float
    matched_on: list[str] = field(default_factory=list)
    same_document: bool = False


def _name_weight(probe: MatchRecord, candidate: MatchRecord) -> tuple[float, list[str]]:
    """Best of the straight reading and the one with given and family names exchanged."""
    best: tuple[float, list[str]] | None = None
    for cand_given, cand_family in ((candidate.given, candidate.family), (candidate.family, candidate.given)):
        given = compare_names(probe.given, cand_given)
        family = compare_names(probe.family, cand_family)
        weight = GIVEN_WEIGHTS[given] + FAMILY_WEIGHTS[family]
        matched = [
            name
            for name, w in (("given_names", GIVEN_WEIGHTS[given]), ("family_names", FAMILY_WEIGHTS[family]))
            if w > 0
        ]
        if best is None or weight > best[0]:
            best = (weight, matched)
    assert best is not None
    return best


def _document_weight(probe: MatchRecord, candidate: MatchRecord) -> tuple[float, bool]:
    """(weight, same document). Same number under another type or country still counts as strong evidence;
    two different numbers for the same kind of document count strongly against, unless one typo apart."""
    evidence: list[float] = []
    for mine in probe.documents:
        for theirs in candidate.documents:
            same_kind = (mine.type, mine.country) == (theirs.type, theirs.country)
            if mine.number == theirs.number:
                if same_kind:
                    return 0.0, True
                evidence.append(6.0)
            elif same_kind:
                evidence.append(2.0 if OSA.distance(mine.number, theirs.number) <= 1 else -12.0)
    if not evidence:
        return 0.0, False
    return (max(evidence) if max(evidence) > 0 else min(evidence)), False


# The most the names can add: what is left to prove once every other field has been weighed.
NAME_WEIGHT_MAX = max(GIVEN_WEIGHTS.values()) + max(FAMILY_WEIGHTS.values())


def _logistic(total: float) -> float:
    return 1.0 / (1.0 + math.exp(-total))


def compare(probe: MatchRecord, candidate: MatchRecord, floor: float = 0.0) -> Comparison:
    """Score how likely `probe` and `candidate` describe the same person.

    With a `floor`, a candidate that could not reach it even with perfectly agreeing names (born years
    apart, another sex, a different document) is not put through the name comparison, the costly part:
    its score is then an upper bound that is still below `floor`.
    """
    doc_weight, same_document = _document_weight(probe, candidate)
    if same_document:
        return Comparison(score=1.0, matched_on=["document"], same_document=True)
    total = PRIOR + doc_weight
    matched_on = ["document"] if doc_weight > 0 else []
    others: list[str] = []

    date_level = compare_dates(probe.date_of_birth, candidate.date_of_birth)
    date_weight = DATE_WEIGHTS[date_level]
    dob = probe.date_of_birth
    if date_level is DateLevel.EXACT and (dob.month, dob.day) == (1, 1):
        date_weight = CONVENTIONAL_DATE_WEIGHT
    total += date_weight
    if date_level in (DateLevel.EXACT, DateLevel.DAY_MONTH_SWAPPED, DateLevel.TYPO):
        others.append("date_of_birth")

    if probe.phone and candidate.phone:
        if probe.phone == candidate.phone:
            total += 2.0
            others.append("phone")
        else:
            total -= 0.5

    known = {"female", "male"}
    if probe.sex in known and candidate.sex in known:
        if probe.sex == candidate.sex:
            total += 0.5
            others.append("sex")
        else:
            total -= 4.0

    if probe.nationality and candidate.nationality:
        if probe.nationality == candidate.nationality:
            total += 0.3
            others.append("nationality")
        else:
            total -= 2.0

    best_case = _logistic(total + NAME_WEIGHT_MAX)
    if best_case < floor:
        return Comparison(score=best_case, matched_on=matched_on + others)
    name_weight, name_fields = _name_weight(probe, candidate)
    return Comparison(score=_logistic(total + name_weight), matched_on=matched_on + name_fields + others)


@dataclass(frozen=True, slots=True)
class Match(Generic[K]):
    """A candidate that scored at or above the review threshold."""

    ident: K
    score: float
    matched_on: list[str]
    same_document: bool


def classify(comparison: Comparison, settings: DedupSettings) -> DedupStatus:
    """Decision for one comparison: the same document of the same type and country is always a duplicate."""
    if comparison.same_document or comparison.score >= settings.auto_threshold:
        return "duplicate"
    if comparison.score >= settings.review_threshold:
        return "possible_duplicate"
    return "unique"


@dataclass(frozen=True, slots=True)
class Decision(Generic[K]):
    """Overall outcome of a registration against a set of candidates: matches best first."""

    status: DedupStatus
    matches: list[Match[K]]


def decide(probe: MatchRecord, candidates: Iterable[tuple[K, MatchRecord]], settings: DedupSettings) -> Decision[K]:
    """Score every candidate, keep those at or above the review threshold and take the strongest status."""
    matches: list[Match[K]] = []
    status: DedupStatus = "unique"
    for ident, record in candidates:
        comparison = compare(probe, record, floor=settings.review_threshold)
        outcome = classify(comparison, settings)
        if outcome == "unique":
            continue
        matches.append(Match(ident, comparison.score, comparison.matched_on, comparison.same_document))
        if outcome == "duplicate" or status == "unique":
            status = outcome
    matches.sort(key=lambda m: (m.same_document, m.score), reverse=True)
    return Decision(status, matches)
