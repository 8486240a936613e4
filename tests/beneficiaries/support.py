"""Registration bodies for the beneficiary tests."""

from __future__ import annotations

from typing import Any


def person_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "given_names": "María José",
        "family_names": "Rodríguez de la Cruz",
        "date_of_birth": "1990-03-07",
        "sex": "female",
        "nationality": "VE",
        "documents": [{"type": "national_id", "number": "V-12.345.678", "issuing_country": "VE"}],
        "phone": "0412-555 12 34",
        "location": {"country": "CO", "admin1": "Norte de Santander", "admin2": "Cúcuta"},
        "household_size": 4,
        "external_ref": "CUC-0001",
        "consent": {"given": True, "date": "2026-11-01", "purpose": "multipurpose cash assistance"},
    }
    body.update(overrides)
    return body
