"""The quality benchmark's labelled sets and its counting: the labels must say what the data is, or the
figures measured with them mean nothing."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from benchmarks.datasets import Record, differences, febrl, spanish, typed
from benchmarks.dedup_quality import Outcome, evaluate

# What each corruption of the typed generator must leave visible, field by field, against the original.
EXPECTED_LEVEL = {
    "document_digit_wrong": ("document", "one_digit"),
    "document_transposed": ("document", "transposed"),
    "document_digit_dropped": ("document", "digit_dropped"),
    "document_other_same_type": ("document", "other_same_type"),
    "document_missing": ("document", "missing"),
    "given_initials": ("given", "initials"),
    "second_given_missing": ("given", "token_missing"),
    "second_surname_missing": ("family", "token_missing"),
    "phone_missing": ("phone", "missing"),
    "day_month_swapped": ("birth", "day_month_swapped"),
    "birth_january_first": ("birth", "january_first"),
}


@pytest.fixture(scope="module")
def typed_set() -> list[Record]:
    return typed.dataset(people=1500, duplicates=600, confusers=300, seed=11)


def test_typed_is_deterministic_for_a_seed(typed_set: list[Record]) -> None:
    again = typed.dataset(people=1500, duplicates=600, confusers=300, seed=11)
    assert [r.body for r in again] == [r.body for r in typed_set]
    assert typed.dataset(people=200, duplicates=50, confusers=20, seed=12)[0].body != typed_set[0].body


def test_typed_labels_match_the_records(typed_set: list[Record]) -> None:
    originals = {r.entity: r for r in typed_set if r.role != "duplicate"}
    duplicates = [r for r in typed_set if r.role == "duplicate"]
    assert len(originals) == len(typed_set) - len(duplicates), "one record per person besides the copies"
    assert sum(e.startswith("t") for e in originals) >= 1500
    assert sum(e.startswith("k") for e in originals) == 300
    assert len(duplicates) == 600
    assert len({r.entity for r in duplicates}) == 600, "each person is copied at most once"
    assert all(r.entity in originals and originals[r.entity].entity.startswith("t") for r in duplicates)
    seen: Counter[str] = Counter()
    for record in duplicates:
        assert set(record.kinds) <= set(typed.PRIMARY) | set(typed.LIGHT)
        assert set(record.kinds) & set(typed.PRIMARY), "every duplicate has at least one real corruption"
        levels = differences(record.body, originals[record.entity].body)
        for kind in record.kinds:
            seen[kind] += 1
            if kind in EXPECTED_LEVEL:
                name, level = EXPECTED_LEVEL[kind]
                assert levels[name] == level, (kind, levels)
        if "names_swapped_typo" in record.kinds:
            assert levels["given"].startswith("swapped:"), levels
            assert levels["family"].startswith("swapped:"), levels
        if "typos_two_fields" in record.kinds:
            assert levels["given"] in {"typo", "two_typos"}, levels
            assert levels["family"] in {"typo", "two_typos"}, levels
    assert set(seen) == set(typed.PRIMARY) | set(typed.LIGHT), "every kind of corruption occurs"


def test_typed_confusers_are_other_people_who_look_alike(typed_set: list[Record]) -> None:
    """Each confuser looks like someone else in the set in the way its role says, and is not them."""
    people = [r.body for r in typed_set if r.role != "duplicate"]

    def year(body: dict[str, Any]) -> int:
        return int(body["date_of_birth"][:4])

    looks_like = {
        "namesake": lambda c, o: (c["given_names"], c["family_names"]) == (o["given_names"], o["family_names"])
        and c["date_of_birth"] != o["date_of_birth"],
        "twin": lambda c, o: c["family_names"] == o["family_names"] and c["date_of_birth"] == o["date_of_birth"]
        and c["given_names"] != o["given_names"],
        "sibling": lambda c, o: c["family_names"] == o["family_names"] and c["given_names"] != o["given_names"],
        "junior": lambda c, o: c["given_names"] == o["given_names"]
        and c["family_names"].split()[0] == o["family_names"].split()[0] and year(c) - year(o) >= 18,
    }  # fmt: skip
    roles = Counter(r.role for r in typed_set)
    assert set(looks_like) <= set(roles)
    for record in typed_set:
        if record.role in looks_like:
            others = [o for o in people if o is not record.body]
            assert any(looks_like[record.role](record.body, o) for o in others), (record.role, record.entity)


def test_spanish_labels() -> None:
    records = spanish.dataset(people=600, duplicates=200, confusers=100, seed=5)
    originals = {r.entity for r in records if r.role == "original"}
    duplicates = [r for r in records if r.role == "duplicate"]
    assert len(duplicates) == 200
    assert all(r.entity in originals and r.kinds for r in duplicates)
    confusers = [r for r in records if r.role not in {"original", "duplicate"}]
    assert len(confusers) == 100
    assert not {r.entity for r in confusers} & originals


@pytest.mark.parametrize(
    ("name", "records", "entities", "originals"),
    [("febrl1", 1000, 500, 500), ("febrl2", 5000, 4000, 4000), ("febrl4", 10000, 5000, 5000)],
)
def test_febrl_entities(name: str, records: int, entities: int, originals: int) -> None:
    loaded = febrl.load(name)
    assert len(loaded) == records
    assert len({r.entity for r in loaded}) == entities
    assert sum(r.role == "original" for r in loaded) == originals
    if name == "febrl4":
        assert Counter(Counter(r.entity for r in loaded).values()) == {2: 5000}


def test_febrl_mapping() -> None:
    loaded = febrl.load("febrl1")
    assert febrl.entity_of("rec-12-dup-3") == ("12", "duplicate")
    assert febrl.entity_of("rec-12-org") == ("12", "original")
    body = next(r.body for r in loaded if r.body.get("family_names") == "berry" and r.role == "original")
    assert body["given_names"] == "lachlan"
    assert body["date_of_birth"] == "1999-02-19"
    assert body["documents"] == [{"type": "national_id", "number": "7364009", "issuing_country": "AU"}]
    assert body["location"] == {"country": "AU", "admin1": "QLD", "admin2": "bittern"}
    assert body["sex"] == "unknown"
    assert "phone" not in body
    assert sum("given_names" not in r.body for r in loaded) == 44, "an empty name is left for the API to refuse"


def test_differences_in_levels() -> None:
    a = {"given_names": "María José", "family_names": "Pérez Gómez", "date_of_birth": "1990-03-07",
         "documents": [{"type": "national_id", "number": "V-12.345.678", "issuing_country": "VE"}]}  # fmt: skip
    b = {"given_names": "Maria J", "family_names": "Perez", "date_of_birth": "1990-07-03",
         "documents": [{"type": "national_id", "number": "12345687", "issuing_country": "VE"}]}  # fmt: skip
    assert differences(b, a) == {
        "given": "initials", "family": "token_missing", "birth": "day_month_swapped", "document": "transposed",
        "phone": "none", "sex": "exact",
    }  # fmt: skip
    swapped = {**a, "given_names": "Pérez Gómes", "family_names": "María José"}
    assert differences(swapped, a)["given"] == "swapped:typo"


def registered(beneficiary_id: str, dedup: str, earlier: list[int], matches: tuple[str, ...] = ()) -> Outcome:
    return Outcome(201, dedup, beneficiary_id, None, [{"beneficiary_id": m} for m in matches], earlier)


class Done:
    """A finished registration run: what `evaluate` reads."""

    def __init__(self, outcomes: dict[int, Outcome]) -> None:
        self.outcomes = outcomes
        self.order = list(outcomes)
        self.record_of = {o.beneficiary_id: i for i, o in outcomes.items() if o.beneficiary_id}


def test_counting() -> None:
    body: dict[str, Any] = {"given_names": "Zacarías", "family_names": "Quintero", "date_of_birth": "2000-01-02"}
    records = [
        Record("a", "original", body),
        Record("a", "duplicate", body, ("document_missing",)),  # caught automatically
        Record("b", "original", body),  # wrongly sent to adjudication against a
        Record("c", "original", body),
        Record("c", "duplicate", body, ("given_initials",)),  # missed
        Record("d", "original", body),
        Record("d", "duplicate", body, ("birth_january_first",)),  # rightly sent to adjudication
        Record("e", "original", {}),  # refused: no names
        Record("f", "twin", body),  # wrongly merged into d
    ]
    done = Done(
        {
            0: registered("id-a", "unique", []),
            1: Outcome(409, "duplicate", None, "id-a", [], [0]),
            2: registered("id-b", "possible_duplicate", [], ["id-a"]),
            3: registered("id-c", "unique", []),
            4: registered("id-c2", "unique", [3]),
            5: registered("id-d", "unique", []),
            6: registered("id-d2", "possible_duplicate", [5], ["id-b", "id-d"]),
            7: Outcome(422),
            8: Outcome(409, "duplicate", None, "id-d", [], []),
        }
    )
    tally = evaluate(records, done, show_errors=10)  # type: ignore[arg-type]
    figures = tally.figures()
    assert (tally.registered, tally.unregistrable, tally.true_duplicates) == (8, 1, 3)
    assert (tally.automatic, tally.automatic_correct, figures["precision_automatic"]) == (2, 1, 0.5)
    assert (tally.possible_true, tally.possible_false) == (1, 1)
    assert figures["precision"] == 2 / 4
    assert figures["recall"] == 2 / 3
    assert tally.missed == {"given_initials": 1}
    assert tally.false_automatic == {"twin": 1}
    assert tally.false_possible == {"original": 1}
    assert len(tally.errors) == 3, "one missed, one wrongly adjudicated, one twin merged"
    assert not any(value in error for error in tally.errors for value in ("Zacarías", "Quintero", "2000"))
