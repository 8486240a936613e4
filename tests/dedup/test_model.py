"""The match model artefact: weights from m and u, term frequencies, explanations, refusal of bad artefacts."""

from __future__ import annotations

import math
from datetime import date

import pytest

from cbi_service.dedup.comparisons import COMPARISONS, GIVEN, gammas
from cbi_service.dedup.model import MAX_LEVEL_WEIGHT, MatchModel, ModelError, default_model
from cbi_service.dedup.normalize import build_record


def artefact(**changes):
    m = {c.name: [None] + [0.9 if level == 1 else 0.1 / (len(c.levels) - 2) for level in range(1, len(c.levels))]
         for c in COMPARISONS}  # fmt: skip
    u = {c.name: [None] + [0.01 if level == 1 else 0.99 / (len(c.levels) - 2) for level in range(1, len(c.levels))]
         for c in COMPARISONS}  # fmt: skip
    data = {"format": "cbi-dedup-model/1", "version": "t", "prior": 0.0001, "m": m, "u": u, "tf": {},
            "levels": {c.name: list(c.levels) for c in COMPARISONS}}  # fmt: skip
    data.update(changes)
    return data


def person(given="Juan", family="Pérez", born=date(1980, 5, 17)):
    return build_record(given_names=given, family_names=family, date_of_birth=born, sex="male", nationality="VE")


def test_weights_are_log2_of_m_over_u_and_contributions_explain_the_total():
    model = MatchModel.from_json(artefact())
    a = b = person()
    score = model.score(a, b, gammas(a, b))
    assert model.weights[0][1] == pytest.approx(math.log2(0.9 / 0.01))
    assert score.match_weight == pytest.approx(model.prior_weight + sum(c.weight for c in score.contributions))
    assert {c.comparison for c in score.contributions} == {"given_names", "family_names", "date_of_birth", "sex",
                                                            "nationality"}  # fmt: skip
    assert score.probability == pytest.approx(2**score.match_weight / (1 + 2**score.match_weight))


def test_a_common_name_agreeing_proves_less_than_a_rare_one():
    model = MatchModel.from_json(artefact(tf={"given_names": {"juan": 0.05}}))
    common, rare = person(), person(given="Eleuterio")
    weight = {c.comparison: c.weight for c in model.score(common, common, gammas(common, common)).contributions}
    rare_weight = {c.comparison: c.weight for c in model.score(rare, rare, gammas(rare, rare)).contributions}
    assert weight["given_names"] < rare_weight["given_names"]
    assert weight["given_names"] == pytest.approx(math.log2(0.9 / 0.01) + math.log2(0.01 / 0.05))


def test_names_typed_into_the_wrong_boxes_weigh_by_the_frequency_of_the_names_compared():
    model = MatchModel.from_json(
        artefact(tf={"given_names": {"juan": 0.001, "perez": 0.2}, "family_names": {"perez": 0.04}})
    )
    probe, exchanged = person(), person(given="Pérez", family="Juan")
    levels = gammas(probe, exchanged)
    assert levels.names_exchanged
    weights = {c.comparison: c.weight for c in model.score(probe, exchanged, levels).contributions}
    straight = {c.comparison: c.weight for c in model.score(probe, probe, gammas(probe, probe)).contributions}
    assert weights["given_names"] == pytest.approx(straight["given_names"])
    assert weights["family_names"] == pytest.approx(straight["family_names"])


def test_a_level_seen_a_handful_of_times_cannot_decide_alone():
    data = artefact()
    data["u"]["given_names"][1] = 1e-30
    assert MatchModel.from_json(data).weights[0][1] == MAX_LEVEL_WEIGHT


@pytest.mark.parametrize(
    "change",
    [
        {"format": "something/2"},
        {"prior": 1.5},
        {"levels": {c.name: list(c.levels)[:-1] for c in COMPARISONS}},
    ],
)
def test_artefacts_of_another_shape_are_refused(change):
    with pytest.raises(ModelError):
        MatchModel.from_json(artefact(**change))


def test_the_artefact_round_trips():
    model = MatchModel.from_json(artefact(tf={"family_names": {"perez": 0.02}}))
    assert MatchModel.from_json(model.to_json()).weights == model.weights


def test_the_shipped_model_loads_and_learned_sensible_directions():
    model = default_model()
    given = {label: model.weights[0][i] for i, label in enumerate(GIVEN.levels)}
    assert given["exact"] > given["typo"] > 0 > given["different"]
    assert model.trained["records"] >= 1000
