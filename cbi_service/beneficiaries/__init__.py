"""Beneficiaries: registration with deduplication, adjudication of possible duplicates, enrolments, bulk imports."""
