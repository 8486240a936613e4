"""Who may call what: one row per route (method, path template) → the roles admitted.

Every `/v1` route of the app must appear here; tests/auth/test_authorization.py checks every route × role.
Webhook routes authenticate by signature and are listed in SIGNATURE_ROUTES instead.
"""

from __future__ import annotations

ALL = frozenset({"admin", "registrar", "programme_officer", "approver", "finance", "auditor"})

MATRIX: dict[tuple[str, str], frozenset[str]] = {
    ("POST", "/v1/programmes"): frozenset({"admin", "programme_officer"}),
    ("GET", "/v1/programmes"): ALL,
    ("GET", "/v1/programmes/{programme_id}"): ALL,
    ("GET", "/v1/audit-events"): frozenset({"auditor", "admin"}),
}

SIGNATURE_ROUTES: set[tuple[str, str]] = set()
