"""Where a merchant is paid: an IBAN with its bank's BIC, or, in a country without IBANs, an account number and
a bank code. Checked with schwifty (the IBAN registry's formats and check digits, BIC structure)."""

from __future__ import annotations

from schwifty import BIC, IBAN, exceptions, registry


def uses_iban(country: str) -> bool:
    """Whether the country's banks number accounts with IBANs (the registry's countries, not the ones it only
    reserves a format for)."""
    try:
        return not registry.get_iban_spec(country).aspirational
    except exceptions.SchwiftyException:
        return False


def compact_iban(text: str, country: str) -> str:
    """The IBAN without spaces, or ValueError saying what is wrong with it."""
    try:
        iban = IBAN(text)
    except exceptions.SchwiftyException as exc:
        raise ValueError(f"not a valid IBAN: {exc}") from None
    if iban.country_code != country:
        raise ValueError(f"must be an IBAN of {country}")
    return str(iban.compact)


def compact_bic(text: str) -> str:
    """The BIC without spaces, or ValueError saying what is wrong with it."""
    try:
        return str(BIC(text).compact)
    except exceptions.SchwiftyException as exc:
        raise ValueError(f"not a valid BIC: {exc}") from None
