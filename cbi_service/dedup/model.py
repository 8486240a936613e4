"""The match model: Fellegi-Sunter weights learned from the registry, kept as a versioned artefact.

For every comparison level the model holds m (how often one person's two records land there) and u (how
often two different people's records do); log2(m/u) is what the level weighs. The sum of the weights
of a pair, plus the prior odds that two records of the registry are one person, gives the pair's match
weight and its probability. Weights are estimated without labels by Splink (see `training`); this module
only reads the artefact and scores, in-process, for each registration.

Exact agreement on a common name proves less than on a rare one: for names listed in the artefact's
frequency tables the exact level's u is the name's own frequency (Splink's term-frequency adjustment).
Only names at least `TF_MIN_COUNT` people share are listed, so the artefact never reveals one person.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from cbi_service.dedup.comparisons import COMPARISONS, GIVEN, Gammas
from cbi_service.dedup.normalize import MatchRecord

FORMAT = "cbi-dedup-model/1"
TF_MIN_COUNT = 10
# Bounds on one level's weight: a level seen a handful of times in training must not decide alone.
MAX_LEVEL_WEIGHT = 20.0


class ModelError(ValueError):
    """An artefact that is not a usable match model."""


@dataclass(frozen=True, slots=True)
class Contribution:
    """One line of an explanation: a comparison, the level the pair reached and what it weighed (bits)."""

    comparison: str
    level: str
    weight: float

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.comparison, "level": self.level, "weight": round(self.weight, 2)}


@dataclass(frozen=True, slots=True)
class Score:
    match_weight: float
    probability: float
    contributions: tuple[Contribution, ...]

    @property
    def agreeing(self) -> list[str]:
        """Fields that counted for the match: the contract's `matched_on`."""
        return [c.comparison for c in self.contributions if c.weight > 0]


def _probability(weight: float) -> float:
    if weight > 60:
        return 1.0
    if weight < -60:
        return 0.0
    odds = math.pow(2.0, weight)
    return odds / (1.0 + odds)


@dataclass(frozen=True)
class MatchModel:
    """A trained model. `m` and `u` per comparison per level (level 0, "not compared", has none)."""

    version: str
    prior: float  # probability that two records of the registry picked at random are one person
    m: dict[str, list[float | None]]
    u: dict[str, list[float | None]]
    tf: dict[str, dict[str, float]] = field(default_factory=dict)
    trained: dict[str, Any] = field(default_factory=dict)
    weights: tuple[tuple[float, ...], ...] = field(init=False, repr=False)
    prior_weight: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.prior < 1:
            raise ModelError("prior must be strictly between 0 and 1")
        weights = []
        for comparison in COMPARISONS:
            m, u = self.m.get(comparison.name), self.u.get(comparison.name)
            if m is None or u is None or len(m) != len(comparison.levels) or len(u) != len(comparison.levels):
                raise ModelError(f"the model has no parameters for every level of {comparison.name}")
            row = [0.0]
            for level in range(1, len(comparison.levels)):
                row.append(self._level_weight(m[level], u[level]))
            weights.append(tuple(row))
        object.__setattr__(self, "weights", tuple(weights))
        object.__setattr__(self, "prior_weight", math.log2(self.prior / (1 - self.prior)))

    @staticmethod
    def _level_weight(m: float | None, u: float | None) -> float:
        """log2(m/u), bounded; a level never seen in training weighs nothing."""
        if not m or not u:
            return 0.0
        return max(-MAX_LEVEL_WEIGHT, min(MAX_LEVEL_WEIGHT, math.log2(m / u)))

    def _tf_adjustment(
        self, index: int, level: int, probe: MatchRecord, candidate: MatchRecord, exchanged: bool
    ) -> float:
        """Term-frequency adjustment of an exact name agreement: a common name agreeing proves less. With the
        names exchanged, the probe's given name was compared with the candidate's family name and back."""
        comparison = COMPARISONS[index]
        if level != comparison.tf_level:
            return 0.0
        table = self.tf.get(comparison.name)
        u = self.u[comparison.name][level]
        if not table or not u:
            return 0.0
        side = "given" if comparison is GIVEN else "family"
        other = ("family" if side == "given" else "given") if exchanged else side
        values = [" ".join(getattr(probe, side)), " ".join(getattr(candidate, other))]
        frequencies = [table[v] for v in values if v in table]
        if not frequencies:
            return 0.0
        return max(-MAX_LEVEL_WEIGHT, min(MAX_LEVEL_WEIGHT, math.log2(u / max(frequencies))))

    def score(self, probe: MatchRecord, candidate: MatchRecord, gammas: Gammas) -> Score:
        """Match weight, probability and the contribution of every comparison, for an explanation."""
        total = self.prior_weight
        contributions: list[Contribution] = []
        for index, level in enumerate(gammas.levels):
            if level == 0:
                continue
            exchanged = gammas.names_exchanged
            weight = self.weights[index][level] + self._tf_adjustment(index, level, probe, candidate, exchanged)
            total += weight
            contributions.append(Contribution(COMPARISONS[index].name, COMPARISONS[index].levels[level], weight))
        return Score(total, _probability(total), tuple(contributions))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": self.version,
            "prior": self.prior,
            "m": self.m,
            "u": self.u,
            "tf": self.tf,
            "trained": self.trained,
            "levels": {c.name: list(c.levels) for c in COMPARISONS},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MatchModel:
        if data.get("format") != FORMAT:
            raise ModelError(f"not a {FORMAT} artefact")
        levels = data.get("levels", {})
        for comparison in COMPARISONS:
            if levels.get(comparison.name) != list(comparison.levels):
                raise ModelError(f"the artefact's levels of {comparison.name} are not this version's")
        return cls(
            version=str(data["version"]),
            prior=float(data["prior"]),
            m=data["m"],
            u=data["u"],
            tf=data.get("tf", {}),
            trained=data.get("trained", {}),
        )


@lru_cache(maxsize=1)
def default_model() -> MatchModel:
    """The model shipped with the service, trained by Splink on synthetic registries: used until the
    registry has a model trained on itself (`cbi-service dedup train`)."""
    text = resources.files("cbi_service.dedup").joinpath("default_model.json").read_text("utf-8")
    return MatchModel.from_json(json.loads(text))
