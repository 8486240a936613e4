"""A registration's dedup decision: its candidates scored by the match model, with an explanation each.

The same document (same type, country and number) is one person whatever else differs. Otherwise every
candidate gets the model's probability; at or above the auto threshold it is a duplicate, between the
thresholds a doubt an adjudicator settles, below the review threshold nobody. When two registered people
both reach the auto threshold the registration is a doubt too: it cannot be both of them.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from cbi_service.dedup.comparisons import gammas, same_document
from cbi_service.dedup.model import MatchModel, Score
from cbi_service.dedup.normalize import MatchRecord
from cbi_service.dedup.settings import DedupSettings

K = TypeVar("K", bound=Hashable)
DedupStatus = Literal["unique", "duplicate", "possible_duplicate"]


@dataclass(frozen=True, slots=True)
class Match(Generic[K]):
    """A candidate that scored at or above the review threshold, and why."""

    ident: K
    score: float
    matched_on: list[str]
    same_document: bool
    explanation: list[dict[str, Any]]
    match_weight: float | None = None


def classify(probability: float, settings: DedupSettings, *, document: bool = False) -> DedupStatus:
    if document or probability >= settings.auto_threshold:
        return "duplicate"
    if probability >= settings.review_threshold:
        return "possible_duplicate"
    return "unique"


def evaluate(model: MatchModel, probe: MatchRecord, candidate: MatchRecord) -> tuple[Score, bool]:
    """The model's score for one pair and whether they share a document of the same kind."""
    return model.score(probe, candidate, gammas(probe, candidate)), same_document(probe, candidate)


def _other_documents(score: Score) -> bool:
    """Both hold a document of the same type with numbers far apart: a renewed or second document, or two
    people. Names and a birth date cannot settle which; a person can, so such a pair is never automatic."""
    return any(c.comparison == "documents" and c.level == "other_number_same_type" for c in score.contributions)


@dataclass(frozen=True, slots=True)
class Decision(Generic[K]):
    """Overall outcome of a registration against a set of candidates: matches best first."""

    status: DedupStatus
    matches: list[Match[K]]


def decide(
    probe: MatchRecord, candidates: Iterable[tuple[K, MatchRecord]], settings: DedupSettings, model: MatchModel
) -> Decision[K]:
    """Score every candidate, keep those at or above the review threshold and take the strongest status."""
    matches: list[Match[K]] = []
    status: DedupStatus = "unique"
    automatic = 0  # candidates at or above the auto threshold without a shared document
    for ident, record in candidates:
        score, document = evaluate(model, probe, record)
        outcome = classify(score.probability, settings, document=document)
        if outcome == "duplicate" and not document and _other_documents(score):
            outcome = "possible_duplicate"
        if outcome == "unique":
            continue
        explanation = [c.as_dict() for c in score.contributions]
        if document:
            explanation.insert(0, {"field": "documents", "level": "same_document_same_type", "weight": None})
        matches.append(
            Match(
                ident,
                1.0 if document else score.probability,
                ["document", *(f for f in score.agreeing if f != "documents")] if document else score.agreeing,
                document,
                explanation,
                round(score.match_weight, 2),
            )
        )
        if outcome == "duplicate" or status == "unique":
            status = outcome
        automatic += outcome == "duplicate" and not document
    matches.sort(key=lambda m: (m.same_document, m.score), reverse=True)
    if automatic > 1 and not matches[0].same_document:
        # Two registered people both look like this one (a record written short, twins): which one it is
        # is for a person to say.
        status = "possible_duplicate"
    return Decision(status, matches)
