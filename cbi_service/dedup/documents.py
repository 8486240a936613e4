"""Canonical forms of identity documents, phone numbers and birth dates.

The same cédula arrives as "V-12.345.678", "12345678" or "012 345 678" depending on who typed it. Dedup
compares canonical values only, so every registration path (API, bulk import, partner hash files) goes
through these functions. Invalid values raise `FieldError`, which the API renders as a field error.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from types import ModuleType

import phonenumbers
from stdnum import exceptions as stdnum_exceptions
from stdnum.ar import dni as ar_dni
from stdnum.br import cpf as br_cpf
from stdnum.cl import rut as cl_rut
from stdnum.cr import cpf as cr_cpf
from stdnum.cu import ni as cu_ni
from stdnum.do import cedula as do_cedula
from stdnum.ec import ci as ec_ci
from stdnum.es import dni as es_dni
from stdnum.es import nie as es_nie
from stdnum.mx import curp as mx_curp
from stdnum.pe import cui as pe_cui

DOCUMENT_TYPES = ("national_id", "passport", "residence_permit", "birth_certificate", "other")

_SEPARATORS = re.compile(r"[\s.\-_/,:#]+")
_ALNUM = re.compile(r"^[A-Z0-9]+$")
_VE_PREFIX = re.compile(r"^(?:V|E|CI|C\.I)[\s.\-:]*", re.IGNORECASE)
EARLIEST_BIRTH_DATE = date(1900, 1, 1)


class FieldError(ValueError):
    """A value that cannot be accepted; `field` names it relative to the object being validated."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _generic(number: str) -> str:
    """Upper-case alphanumerics without separators; purely numeric numbers lose leading zeros."""
    compact = _SEPARATORS.sub("", number).upper()
    if not _ALNUM.match(compact):
        raise FieldError("number", "may contain only letters, digits and separators")
    if compact.isdigit():
        compact = compact.lstrip("0") or "0"
    if not 3 <= len(compact) <= 20:
        raise FieldError("number", "must have between 3 and 20 characters")
    return compact


def _digits(number: str, low: int, high: int, label: str) -> str:
    compact = _generic(number)
    if not compact.isdigit() or not low <= len(compact) <= high:
        raise FieldError("number", f"a {label} has {low} to {high} digits")
    return compact


def _venezuelan_cedula(number: str) -> str:
    """Venezuelan cédula: the V- (national) or E- (foreign) prefix and the dots are not part of the number."""
    return _digits(_VE_PREFIX.sub("", number.strip()), 4, 9, "Venezuelan cédula")


def _colombian_cedula(number: str) -> str:
    """Colombian cédula de ciudadanía: no check digit, 3 to 10 digits."""
    return _digits(number, 3, 10, "Colombian cédula")


def _peruvian_dni(number: str) -> str:
    """Peruvian DNI: 8 digits, sometimes written with the CUI check digit, which is dropped after checking."""
    return _stdnum(pe_cui)(number)[:8]


def _stdnum(module: ModuleType) -> Callable[[str], str]:
    def normalise(number: str) -> str:
        try:
            return str(module.validate(number))
        except stdnum_exceptions.InvalidChecksum:
            raise FieldError("number", "check digit does not match") from None
        except stdnum_exceptions.ValidationError:
            raise FieldError("number", f"not a valid {module.__name__.rsplit('.', 1)[-1].upper()}") from None

    return normalise


# (document type, issuing country) -> normaliser. Anything else gets the generic rules.
_NORMALISERS: dict[tuple[str, str], Callable[[str], str]] = {
    ("national_id", "AR"): _stdnum(ar_dni),
    ("national_id", "BR"): _stdnum(br_cpf),
    ("national_id", "CL"): _stdnum(cl_rut),
    ("national_id", "CO"): _colombian_cedula,
    ("national_id", "CR"): _stdnum(cr_cpf),
    ("national_id", "CU"): _stdnum(cu_ni),
    ("national_id", "DO"): _stdnum(do_cedula),
    ("national_id", "EC"): _stdnum(ec_ci),
    ("national_id", "ES"): _stdnum(es_dni),
    ("residence_permit", "ES"): _stdnum(es_nie),
    ("national_id", "MX"): _stdnum(mx_curp),
    ("national_id", "PE"): _peruvian_dni,
    ("national_id", "VE"): _venezuelan_cedula,
}


def normalize_document(doc_type: str, number: str, issuing_country: str) -> str:
    """Canonical number of a document, validated with python-stdnum where it knows the identifier."""
    if doc_type not in DOCUMENT_TYPES:
        raise FieldError("type", f"must be one of {', '.join(DOCUMENT_TYPES)}")
    if not number or not number.strip():
        raise FieldError("number", "must not be empty")
    normaliser = _NORMALISERS.get((doc_type, issuing_country.upper()), _generic)
    return normaliser(number.strip())


def normalize_phone(raw: str, *regions: str | None) -> str:
    """E.164 form of a phone written in any common notation.

    A number without its country code is read in each of `regions` in turn (the location's country, then
    the nationality's): a Venezuelan in Colombia often gives a Venezuelan mobile as "0414 ...".
    """
    candidates: list[str | None] = [r.upper() for r in regions if r]
    for region in candidates or [None]:
        try:
            parsed = phonenumbers.parse(raw, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    raise FieldError("phone", "not a valid phone number")


def check_birth_date(value: date, today: date) -> date:
    """Birth dates must exist (parsing guarantees it), not lie in the future, nor before 1900."""
    if value > today:
        raise FieldError("date_of_birth", "must not be in the future")
    if value < EARLIEST_BIRTH_DATE:
        raise FieldError("date_of_birth", "must not be before 1900-01-01")
    return value
