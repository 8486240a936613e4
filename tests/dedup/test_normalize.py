from __future__ import annotations

from datetime import date

import pytest

from cbi_service.dedup.blocking import blocking_keys
from cbi_service.dedup.documents import (
    FieldError,
    check_birth_date,
    normalize_document,
    normalize_phone,
)
from cbi_service.dedup.normalize import DocumentKey, build_record, fold, name_tokens, spanish_phonetic
from cbi_service.dedup.settings import DedupSettings


def person(given: str = "María José", family: str = "Rodríguez de la Cruz", born: date = date(1990, 3, 7), **kw):
    return build_record(given_names=given, family_names=family, date_of_birth=born, sex=kw.pop("sex", "female"),
                        nationality=kw.pop("nationality", "VE"), **kw)  # fmt: skip


def test_accents_and_case_are_folded():
    assert fold("  NÚÑEZ  Peña ") == "nunez pena"
    assert name_tokens("JOSÉ ÁNGEL") == name_tokens("jose angel")


def test_particles_are_dropped_from_compound_surnames():
    assert name_tokens("De la Cruz") == ("cruz",)
    assert name_tokens("Ortega y Gasset") == ("ortega", "gasset")
    assert name_tokens("Van der Berg de los Ríos") == ("berg", "rios")
    assert name_tokens("Da") == ("da",)


def test_transliteration_of_other_scripts():
    assert name_tokens("Алексей Смирнов") == ("aleksei", "smirnov")


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("Valentina", "Balentina"),
        ("Cecilia", "Sesilia"),
        ("Castillo", "Castiyo"),
        ("Hernández", "Ernandes"),
        ("Jimena", "Ximena"),
        ("Javier", "Xavier"),
        ("Gerardo", "Jerardo"),
        ("Quintero", "Kintero"),
        ("Núñez", "Nunez"),
        ("Stephany", "Estefany"),
        ("Jhonathan", "Jonatan"),
        ("Agüero", "Aguero"),
    ],
)
def test_spanish_phonetic_key_merges_spellings(one, other):
    assert spanish_phonetic(one) == spanish_phonetic(other)


@pytest.mark.parametrize(("one", "other"), [("Guillermo", "Jiyermo"), ("Mario", "Maria"), ("Rosa", "Rocha")])
def test_spanish_phonetic_key_keeps_different_sounds_apart(one, other):
    assert spanish_phonetic(one) != spanish_phonetic(other)


@pytest.mark.parametrize(
    ("doc_type", "number", "country", "expected"),
    [
        ("national_id", "V-12.345.678", "VE", "12345678"),
        ("national_id", "e 12345678", "VE", "12345678"),
        ("national_id", "1.023.456.789", "CO", "1023456789"),
        ("national_id", "12345678-z", "ES", "12345678Z"),
        ("residence_permit", "X-1234567-L", "ES", "X1234567L"),
        ("national_id", "12.345.678-5", "CL", "123456785"),
        ("passport", "0012 3456", "VE", "123456"),
        ("passport", "ab-123.456", "CO", "AB123456"),
    ],
)
def test_documents_are_normalised_per_type_and_country(doc_type, number, country, expected):
    assert normalize_document(doc_type, number, country) == expected


@pytest.mark.parametrize(
    ("doc_type", "number", "country"),
    [("national_id", "12345678A", "ES"), ("national_id", "0912345670", "EC"), ("passport", "ab*12", "CO"),
     ("national_id", "12", "CO"), ("driving_licence", "123456", "CO")],
)  # fmt: skip
def test_invalid_documents_raise_field_errors(doc_type, number, country):
    with pytest.raises(FieldError):
        normalize_document(doc_type, number, country)


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("0412-555 12 34", "VE", "+584125551234"),
        ("(0414) 123.45.67", "VE", "+584141234567"),
        ("300 123 4567", "CO", "+573001234567"),
        ("+58 412 5551234", "CO", "+584125551234"),
        ("0058 412 5551234", "ES", "+584125551234"),
    ],
)
def test_phones_in_common_notations_come_out_e164(raw, region, expected):
    assert normalize_phone(raw, region) == expected


def test_local_number_of_the_nationality_country_is_understood():
    assert normalize_phone("0414 765 4321", "CO", "VE") == "+584147654321"


def test_invalid_phone_and_future_birth_date_are_field_errors():
    with pytest.raises(FieldError) as phone_error:
        normalize_phone("12345", "CO")
    assert phone_error.value.field == "phone"
    with pytest.raises(FieldError) as date_error:
        check_birth_date(date(2030, 1, 1), date(2026, 11, 22))
    assert date_error.value.field == "date_of_birth"


def test_thresholds_must_be_ordered():
    with pytest.raises(ValueError, match="REVIEW_THRESHOLD"):
        DedupSettings(auto_threshold=0.5, review_threshold=0.9)


def test_keys_per_person_stay_few():
    full = person(documents=(DocumentKey("national_id", "VE", "12345678"),), phone="+584125551234")
    assert 6 <= len(blocking_keys(full)) <= 12


def test_typos_in_both_names_still_share_a_key():
    original = person(given="Valentina", family="Moreno Ruiz")
    typed = person(given="Valemtina", family="Morneo")
    assert set(blocking_keys(typed)) & set(blocking_keys(original))


@pytest.mark.parametrize(
    ("written", "registered"),
    [
        # 1 January for an unknown birth date, and a typo in the given name and the first surname
        (("Jlio", "Sarmiento Zapata"), ("Julio", "Sarmienot Zapata")),
        # 1 January, given and family names exchanged, and a typo in the first given name
        (("Moreno Ruiz", "Vlaentina Sofía"), ("Valentina Sofía", "Moreno Ruiz")),
    ],
)
def test_typos_in_two_names_and_1_january_for_the_date_still_share_a_key(written, registered):
    original = person(given=registered[0], family=registered[1], born=date(1990, 9, 25))
    unknown_day = person(given=written[0], family=written[1], born=date(1990, 1, 1))
    assert set(blocking_keys(unknown_day)) & set(blocking_keys(original))
