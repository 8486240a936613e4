"""Splink learns the match model from an unlabelled registry: agreement weighs for, disagreement against."""

from __future__ import annotations

import pytest

from cbi_service.dedup.comparisons import BIRTH, FAMILY, GIVEN
from cbi_service.dedup.training import MIN_RECORDS, NotEnoughRecords, train
from tests.dedup.support import registry_records


def test_a_model_learned_without_labels_points_the_right_way():
    records = [(str(i), record) for i, (_, record) in enumerate(registry_records(2000, seed=11))]
    model = train(records, version="t", u_pairs=5e4)
    for comparison, index in ((GIVEN, 0), (FAMILY, 1), (BIRTH, 2)):
        weights = dict(zip(comparison.levels, model.weights[index], strict=True))
        assert weights["exact"] > 3 > 0 >= weights["different"], comparison.name
    assert 0 < model.prior < 0.01
    assert model.trained["records"] == 2000


def test_too_small_a_registry_is_refused():
    with pytest.raises(NotEnoughRecords):
        train([(str(i), r) for i, (_, r) in enumerate(registry_records(MIN_RECORDS - 1))], version="t")
