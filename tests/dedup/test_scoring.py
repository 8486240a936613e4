"""Registration decisions with the shipped model: the misses of hand-set weights are caught, people who only
look alike are not merged, and doubt goes to a person."""

from __future__ import annotations

from datetime import date

import pytest

from cbi_service.dedup.model import default_model
from cbi_service.dedup.normalize import DocumentKey, build_record
from cbi_service.dedup.scoring import decide
from cbi_service.dedup.settings import DedupSettings

SETTINGS = DedupSettings()
MODEL = default_model()


def person(given="María José", family="Rodríguez Cruz", born=date(1990, 3, 7), document="12345678", **kw):
    documents = (DocumentKey("national_id", "VE", document),) if document else ()
    return build_record(given_names=given, family_names=family, date_of_birth=born, sex=kw.pop("sex", "female"),
                        nationality="VE", documents=documents, **kw)  # fmt: skip


def status(new, registered) -> str:
    return decide(new, [("x", registered)], SETTINGS, MODEL).status


@pytest.mark.parametrize(
    "copy",
    [
        person(document="12345679"),  # one digit of the document mistyped
        person(document="12354678"),  # two digits transposed
        person(given="Maria J"),  # initials for a given name
        person(given="Maria J", document=None),
        person(given="Mraía José", family="Rodrígez Cruz", document=None),  # typos in two fields at once
        person(given="Rodrígez Cruz", family="María José", document=None),  # names exchanged, with a typo
        person(family="Rodríguez", born=date(1990, 7, 3), document=None),  # second surname and day/month
        person(born=date(1990, 1, 1), document=None),  # only the year was known
    ],
)
def test_copies_that_hand_set_weights_missed_are_flagged(copy):
    assert status(copy, person()) != "unique"


def test_a_second_document_of_the_same_type_against_names_and_birth_date_is_doubt_not_proof():
    assert status(person(document="87654321"), person()) == "possible_duplicate"


def test_the_same_document_is_one_person_whatever_else_differs():
    other = person(given="Pedro", family="Gómez", born=date(1970, 1, 1), sex="male")
    decision = decide(other, [("x", person())], SETTINGS, MODEL)
    assert decision.status == "duplicate"
    assert decision.matches[0].matched_on[0] == "document"
    same = decide(person(), [("x", person())], SETTINGS, MODEL).matches[0]
    assert same.matched_on.count("document") == 1
    assert "documents" not in same.matched_on


@pytest.mark.parametrize(
    "other",
    [
        person(given="Ana Lucía", born=date(1994, 8, 2), document=None),  # a sister
        person(given="Ana Lucía", document=None),  # a twin sister
        person(born=date(1971, 10, 22), document=None),  # a namesake born in another year
        person(given="Daniel", family="Rodríguez Cruz", sex="male", document=None),  # masculine form, twin
    ],
)
def test_people_who_only_look_alike_are_never_merged_automatically(other):
    assert status(other, person(document=None)) != "duplicate"
    assert status(other, person(given="María José", document=None)) != "duplicate"


def test_two_registered_people_matching_one_registration_is_for_a_person_to_settle():
    juan = person(given="Juan Carlos", family="Pérez Gil", sex="male", document=None)
    twin = person(given="Juan Pablo", family="Pérez Gil", sex="male", document=None)
    written_short = person(given="Juan", family="Pérez Gil", sex="male", document=None)
    decision = decide(written_short, [("a", juan), ("b", twin)], SETTINGS, MODEL)
    assert decision.status != "duplicate"


def test_every_match_explains_what_agreed_and_what_weighed():
    decision = decide(person(given="Maria J"), [("x", person())], SETTINGS, MODEL)
    match = decision.matches[0]
    fields = {line["field"]: line for line in match.explanation}
    assert fields["given_names"]["level"] == "initials"
    assert fields["documents"]["level"] == "same_number"
    assert match.match_weight == pytest.approx(
        MODEL.prior_weight + sum(line["weight"] for line in match.explanation if line["weight"] is not None), abs=0.1
    )


@pytest.mark.parametrize(
    ("copy", "registered"),
    [
        (person(given="Jse", document=None), person(given="José", document=None)),  # a letter left out, short name
        (person(given="Delfin", family="Rodriguez Crz", document=None), person(given="Delfina", document=None)),
        (
            person(given="Octavio T", family="Velázquez", document=None),  # initials for two of three names
            person(given="Octavio Thiago Lionel", family="Velázquez", document=None),
        ),
    ],
)
def test_copies_written_short_or_mistyped_in_short_names_are_flagged(copy, registered):
    assert status(copy, registered) != "unique"


def test_twins_sharing_a_first_given_name_are_not_flagged():
    juan_david = person(given="Juan David", family="Pérez Gil", sex="male", document=None)
    juan_diego = person(given="Juan Diego", family="Pérez Gil", sex="male", document=None)
    assert status(juan_diego, juan_david) == "unique"
