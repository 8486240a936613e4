"""The agreement levels every comparison sorts a pair into: the same levels online, in training and sweeps."""

from __future__ import annotations

import json
from datetime import date

import pytest

from cbi_service.dedup.comparisons import COMPARISONS, gammas, same_document, sql_levels
from cbi_service.dedup.normalize import DocumentKey, build_record


def person(given: str = "María José", family: str = "Rodríguez Cruz", born: date = date(1990, 3, 7), **kw):
    return build_record(given_names=given, family_names=family, date_of_birth=born, sex=kw.pop("sex", "female"),
                        nationality=kw.pop("nationality", "VE"), **kw)  # fmt: skip


def labels(a, b) -> dict[str, str]:
    levels = gammas(a, b)
    return {c.name: levels.label(i) for i, c in enumerate(COMPARISONS)}


def national_id(number: str) -> tuple[DocumentKey, ...]:
    return (DocumentKey("national_id", "VE", number),)


@pytest.mark.parametrize(
    ("variant", "field", "level"),
    [
        ({}, "given_names", "exact"),
        ({"given": "Maria J"}, "given_names", "initials"),
        ({"given": "M. José"}, "given_names", "initials"),
        ({"given": "María"}, "given_names", "missing_name"),
        ({"given": "María Jsoe"}, "given_names", "typo"),
        ({"given": "José María"}, "given_names", "exact"),
        ({"given": "Ana María José"}, "given_names", "partial"),
        ({"given": "María Fernanda"}, "given_names", "different"),  # twins are named so, one person is not
        ({"given": "Ana Lucía"}, "given_names", "different"),
        ({"family": "Cruz Rodríguez"}, "family_names", "exact"),
        ({"family": "Rodríguez"}, "family_names", "missing_surname"),
        ({"family": "Rodrígez Cruz"}, "family_names", "typo"),
        ({"family": "Rodríguez Pérez"}, "family_names", "partial"),
        ({"family": "Gómez Pérez"}, "family_names", "different"),
        ({"born": date(1990, 7, 3)}, "date_of_birth", "day_month_swapped"),
        ({"born": date(1990, 3, 8)}, "date_of_birth", "one_digit"),
        ({"born": date(1990, 1, 1)}, "date_of_birth", "1_january_same_year"),
        ({"born": date(1990, 11, 30)}, "date_of_birth", "same_year"),
        ({"born": date(1991, 11, 30)}, "date_of_birth", "within_2_years"),
        ({"born": date(1962, 11, 30)}, "date_of_birth", "different"),
        ({"sex": "unknown"}, "sex", "missing"),
        ({"sex": "male"}, "sex", "different"),
    ],
)
def test_levels_of_how_records_of_one_person_differ(variant, field, level):
    assert labels(person(**variant), person())[field] == level


def test_masculine_and_feminine_forms_are_different_names():
    assert labels(person(given="Daniel", sex="male"), person(given="Daniela"))["given_names"] == "different"
    assert labels(person(given="Mario", sex="unknown"), person(given="María"))["given_names"] == "different"


def test_a_letter_left_out_of_a_womans_name_is_a_typo_when_both_records_say_she_is_a_woman():
    assert labels(person(given="Delfin"), person(given="Delfina"))["given_names"] == "typo"
    assert labels(person(given="Luciana Sofía"), person(given="Lucian Sofía"))["given_names"] == "typo"


def test_surnames_have_no_feminine_form():
    assert labels(person(family="Oliver Perea", sex="male"), person(family="Olivera Perea"))["family_names"] == "typo"


@pytest.mark.parametrize(
    ("one", "other", "field"),
    [
        ("José", "Jse", "given_names"),  # a letter left out of a four-letter name
        ("Luis Eduardo", "Lui Eduardo", "given_names"),
        ("Gil", "Gill", "family_names"),  # a letter typed twice
        ("Rico Aguayo", "Ric Aguayo", "family_names"),
    ],
)
def test_a_letter_left_out_or_typed_twice_in_a_short_name_is_a_typo(one, other, field):
    name = "given" if field == "given_names" else "family"
    assert labels(person(**{name: one}), person(**{name: other}))[field] == "typo"


def test_a_letter_changed_in_a_three_letter_name_is_another_name():
    assert labels(person(given="Ana Sofía"), person(given="Ada Sofía"))["given_names"] == "different"


def test_initials_for_some_of_three_given_names():
    assert labels(person(given="Octavio T"), person(given="Octavio Thiago Lionel"))["given_names"] == "initials"


def test_a_surname_written_twice_is_the_first_with_the_second_left_out():
    assert labels(person(family="Martínez"), person(family="Martínez Martínez"))["family_names"] == "missing_surname"


def test_a_space_typed_or_left_out_is_a_typo():
    assert labels(person(family="Mc Gilchrist"), person(family="McGilchrist"))["family_names"] == "typo"
    assert labels(person(given="Maricarmen"), person(given="Mari Carmen"))["given_names"] == "typo"


def test_twins_named_alike_are_not_one_person():
    """Same surnames and birth date, one given name shared and one not: the given names count as different."""
    juan_david, juan_diego = person(given="Juan David", sex="male"), person(given="Juan Diego", sex="male")
    assert labels(juan_david, juan_diego)["given_names"] == "different"


def test_a_letter_typed_twice_is_a_typo_not_a_feminine_form():
    assert labels(person(given="Maria"), person(given="Mariaa"))["given_names"] == "typo"


@pytest.mark.parametrize(
    ("one", "other", "level"),
    [
        ("12345678", "12345678", "same_number"),
        ("12345678", "12345679", "one_edit"),  # one digit mistyped
        ("12345678", "12354678", "one_edit"),  # two digits transposed
        ("12345678", "1234568", "one_edit"),  # a digit dropped
        ("12345678", "12354679", "two_edits"),
        ("12345678", "87654321", "other_number_same_type"),  # a second document of the same type
    ],
)
def test_document_levels(one, other, level):
    assert labels(person(documents=national_id(one)), person(documents=national_id(other)))["documents"] == level


def test_documents_of_other_types_are_not_compared_unless_the_number_is_the_same():
    passport = (DocumentKey("passport", "VE", "87654321"),)
    assert labels(person(documents=national_id("12345678")), person(documents=passport))["documents"] == "missing"
    same = (DocumentKey("passport", "VE", "12345678"),)
    assert labels(person(documents=national_id("12345678")), person(documents=same))["documents"] == "same_number"
    assert not same_document(person(documents=national_id("12345678")), person(documents=same))


def test_given_and_family_names_exchanged_with_a_typo_are_read_exchanged():
    levels = gammas(person(given="Rodrígues Cruz", family="María José"), person())
    assert levels.names_exchanged
    assert (levels.label(0), levels.label(1)) == ("typo", "exact")


def test_sql_levels_are_the_online_levels():
    a, b = person(given="Maria J", documents=national_id("12345678")), person(documents=national_id("12354678"))
    text = sql_levels(json.dumps(a.to_profile()), json.dumps(b.to_profile()))
    assert tuple(int(digit) for digit in text) == gammas(a, b).levels
