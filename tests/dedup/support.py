"""Builders the dedup tests share: a match model made by hand (training needs a thousand records and
minutes; what these tests check does not depend on the weights being learned)."""

from __future__ import annotations

from cbi_service.dedup.comparisons import COMPARISONS
from cbi_service.dedup.model import MatchModel

# m and u per level after "missing", strongest agreement first: plausible, not learned.
HAND_M = {
    "given_names": [0.80, 0.08, 0.05, 0.02, 0.03, 0.02],
    "family_names": [0.75, 0.08, 0.10, 0.05, 0.02],
    "date_of_birth": [0.85, 0.02, 0.04, 0.05, 0.02, 0.02],
    "documents": [0.90, 0.06, 0.01, 0.03],
    "phone": [0.8, 0.2],
    "sex": [0.97, 0.03],
    "nationality": [0.97, 0.03],
}
HAND_U = {
    "given_names": [0.01, 0.005, 0.01, 0.002, 0.05, 0.923],
    "family_names": [0.005, 0.003, 0.01, 0.08, 0.902],
    "date_of_birth": [0.0005, 0.0001, 0.0002, 0.001, 0.05, 0.9482],
    "documents": [0.00001, 0.0001, 0.001, 0.99889],
    "phone": [0.05, 0.95],
    "sex": [0.5, 0.5],
    "nationality": [0.6, 0.4],
}


def hand_model(version: str = "hand-1", prior: float = 0.0005) -> MatchModel:
    return MatchModel(
        version=version,
        prior=prior,
        m={c.name: [None, *HAND_M[c.name]] for c in COMPARISONS},
        u={c.name: [None, *HAND_U[c.name]] for c in COMPARISONS},
        tf={"given_names": {"maria": 0.05}, "family_names": {"garcia": 0.03}},
        trained={"by": "hand"},
    )
