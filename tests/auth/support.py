"""Who may call what: one row per route (method, path template) → the roles admitted.

Every `/v1` route of the app must appear here; tests/auth/test_authorization.py checks every route × role.
Webhook routes authenticate by signature and are listed in SIGNATURE_ROUTES instead; routes anyone may call
(the public keys of vouchers and of export manifests) in PUBLIC_ROUTES.
"""

from __future__ import annotations

ALL = frozenset({"admin", "registrar", "programme_officer", "approver", "finance", "auditor"})
"""Every staff role: "any staff role" of §2. A merchant's key is not staff and reaches merchant routes only."""
ROLES = ALL | {"merchant"}
# Who may read beneficiary records: personal data stays away from approvers and finance.
READERS = frozenset({"registrar", "programme_officer", "admin", "auditor"})

MATRIX: dict[tuple[str, str], frozenset[str]] = {
    ("POST", "/v1/programmes"): frozenset({"admin", "programme_officer"}),
    ("GET", "/v1/programmes"): ALL,
    ("GET", "/v1/programmes/{programme_id}"): ALL,
    ("PATCH", "/v1/programmes/{programme_id}"): frozenset({"admin", "programme_officer"}),
    ("POST", "/v1/programmes/{programme_id}/funds"): frozenset({"finance"}),
    ("GET", "/v1/programmes/{programme_id}/balances"): ALL,
    ("GET", "/v1/providers"): ALL,
    ("GET", "/v1/ledger/accounts"): frozenset({"auditor", "finance", "admin"}),
    ("GET", "/v1/ledger/accounts/{account_id}/entries"): frozenset({"auditor", "finance", "admin"}),
    ("GET", "/v1/ledger/trial-balance"): frozenset({"auditor", "finance", "admin"}),
    ("GET", "/v1/audit-events"): frozenset({"auditor", "admin"}),
    ("POST", "/v1/beneficiaries"): frozenset({"registrar"}),
    ("GET", "/v1/beneficiaries"): READERS,
    ("GET", "/v1/beneficiaries/{beneficiary_id}"): READERS,
    ("PATCH", "/v1/beneficiaries/{beneficiary_id}"): frozenset({"registrar"}),
    ("POST", "/v1/beneficiaries/{beneficiary_id}/deactivate"): frozenset({"registrar"}),
    ("GET", "/v1/beneficiaries/{beneficiary_id}/personal-data"): frozenset({"admin", "registrar"}),
    ("POST", "/v1/beneficiaries/{beneficiary_id}/erasure"): frozenset({"admin"}),
    ("POST", "/v1/beneficiaries/imports"): frozenset({"registrar"}),
    ("GET", "/v1/beneficiaries/imports/template"): READERS,
    ("GET", "/v1/beneficiaries/imports"): frozenset({"registrar", "admin", "auditor"}),
    ("GET", "/v1/beneficiaries/imports/{import_id}"): frozenset({"registrar", "admin", "auditor"}),
    ("GET", "/v1/beneficiaries/imports/{import_id}/errors.csv"): frozenset({"registrar", "admin", "auditor"}),
    ("POST", "/v1/dedup/check"): frozenset({"registrar", "admin"}),
    ("POST", "/v1/dedup/sweeps"): frozenset({"registrar", "admin"}),
    ("GET", "/v1/dedup/sweeps"): frozenset({"registrar", "admin", "auditor"}),
    ("GET", "/v1/dedup/sweeps/{sweep_id}"): frozenset({"registrar", "admin", "auditor"}),
    ("GET", "/v1/adjudications"): frozenset({"registrar", "admin", "auditor"}),
    ("POST", "/v1/adjudications/{adjudication_id}/decision"): frozenset({"registrar", "admin"}),
    ("POST", "/v1/programmes/{programme_id}/enrolments"): frozenset({"programme_officer", "registrar"}),
    ("GET", "/v1/ledger/export"): frozenset({"auditor", "finance"}),
    ("GET", "/v1/ledger/export/manifest"): frozenset({"auditor", "finance"}),
    ("POST", "/v1/reconciliations"): frozenset({"finance", "auditor"}),
    ("GET", "/v1/reconciliations/{reconciliation_id}"): frozenset({"finance", "auditor"}),
    ("GET", "/v1/reconciliations/breaks"): frozenset({"finance", "auditor"}),
    ("GET", "/v1/reports/people-reached"): ALL,
    ("GET", "/v1/reports/5w"): frozenset({"programme_officer", "finance", "auditor"}),
    ("POST", "/v1/fx-rates"): frozenset({"finance"}),
    ("GET", "/v1/fx-rates"): ALL,
    ("POST", "/v1/payment-batches"): frozenset({"programme_officer"}),
    ("GET", "/v1/payment-batches"): ALL,
    ("GET", "/v1/payment-batches/{batch_id}"): ALL,
    ("POST", "/v1/payment-batches/{batch_id}/submit"): frozenset({"programme_officer"}),
    ("POST", "/v1/payment-batches/{batch_id}/approvals"): frozenset({"approver"}),
    ("POST", "/v1/payment-batches/{batch_id}/release"): frozenset({"finance"}),
    ("POST", "/v1/payment-batches/{batch_id}/cancel"): frozenset({"programme_officer"}),
    ("POST", "/v1/payment-batches/{batch_id}/follow-up"): frozenset({"programme_officer"}),
    ("GET", "/v1/payment-batches/{batch_id}/vouchers.pdf"): frozenset({"programme_officer"}),
    ("GET", "/v1/entitlements"): ALL,
    ("GET", "/v1/entitlements/{entitlement_id}"): ALL,
    ("POST", "/v1/entitlements/{entitlement_id}/retry"): frozenset({"finance", "programme_officer"}),
    ("POST", "/v1/entitlements/{entitlement_id}/cancel"): frozenset({"finance", "programme_officer"}),
    ("GET", "/v1/webhooks/unmatched"): frozenset({"auditor", "finance"}),
    ("GET", "/v1/webhooks/events"): frozenset({"auditor", "finance"}),
    ("POST", "/v1/merchants"): frozenset({"admin"}),
    ("GET", "/v1/merchants"): frozenset({"admin", "finance", "auditor"}),
    ("GET", "/v1/merchants/{merchant_id}"): frozenset({"admin", "finance", "auditor", "merchant"}),
    ("POST", "/v1/voucher-redemptions"): frozenset({"merchant"}),
    ("POST", "/v1/voucher-redemptions/sync"): frozenset({"merchant"}),
    ("GET", "/v1/voucher-redemptions"): frozenset({"admin", "finance", "auditor", "merchant"}),
    ("POST", "/v1/merchant-settlements"): frozenset({"finance"}),
    ("GET", "/v1/merchant-settlements"): frozenset({"admin", "finance", "approver", "auditor", "merchant"}),
    ("GET", "/v1/merchant-settlements/{settlement_id}"): frozenset(
        {"admin", "finance", "approver", "auditor", "merchant"}
    ),
    ("POST", "/v1/merchant-settlements/{settlement_id}/submit"): frozenset({"finance"}),
    ("POST", "/v1/merchant-settlements/{settlement_id}/approvals"): frozenset({"approver"}),
    ("POST", "/v1/merchant-settlements/{settlement_id}/release"): frozenset({"finance"}),
    ("POST", "/v1/merchant-settlements/{settlement_id}/cancel"): frozenset({"finance"}),
    ("POST", "/v1/merchant-settlements/{settlement_id}/paid"): frozenset({"finance"}),
    ("POST", "/v1/merchant-settlements/{settlement_id}/refused"): frozenset({"finance"}),
    ("GET", "/v1/merchant-settlements/{settlement_id}/pain001.xml"): frozenset({"finance", "auditor"}),
}

SIGNATURE_ROUTES: set[tuple[str, str]] = {
    ("POST", "/v1/webhooks/{provider}"),
    ("POST", "/v1/g2p-connect/{provider}/on-disburse"),
    ("POST", "/v1/g2p-connect/{provider}/txn/on-status"),
}
PUBLIC_ROUTES: set[tuple[str, str]] = {("GET", "/v1/vouchers/keys"), ("GET", "/v1/ledger/export/manifest/keys")}

# The console (§17) authenticates by its session cookie. Each page admits the roles of the API route it
# stands for, so its row names that route's; the console's own pages (its home) admit any staff role.
_IMPORTS = MATRIX[("GET", "/v1/beneficiaries/imports")]
_ADJUDICATIONS = MATRIX[("GET", "/v1/adjudications")]
_EXPORT = MATRIX[("GET", "/v1/ledger/export")]
CONSOLE_MATRIX: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/console"): ALL,
    ("GET", "/console/batches"): MATRIX[("GET", "/v1/payment-batches")],
    ("GET", "/console/batches/{batch_id}"): MATRIX[("GET", "/v1/payment-batches/{batch_id}")],
    ("POST", "/console/batches/{batch_id}/approvals"): MATRIX[("POST", "/v1/payment-batches/{batch_id}/approvals")],
    ("POST", "/console/batches/{batch_id}/release"): MATRIX[("POST", "/v1/payment-batches/{batch_id}/release")],
    ("GET", "/console/programmes"): MATRIX[("GET", "/v1/programmes/{programme_id}/balances")],
    ("GET", "/console/ledger/trial-balance"): MATRIX[("GET", "/v1/ledger/trial-balance")],
    ("GET", "/console/reports/people-reached"): MATRIX[("GET", "/v1/reports/people-reached")],
    ("GET", "/console/reports/5w"): MATRIX[("GET", "/v1/reports/5w")],
    ("GET", "/console/reports/5w/file"): MATRIX[("GET", "/v1/reports/5w")],
    ("GET", "/console/audit-events"): MATRIX[("GET", "/v1/audit-events")],
    ("GET", "/console/adjudications"): _ADJUDICATIONS,
    ("GET", "/console/adjudications/{adjudication_id}"): _ADJUDICATIONS,
    ("POST", "/console/adjudications/{adjudication_id}/decision"): MATRIX[
        ("POST", "/v1/adjudications/{adjudication_id}/decision")
    ],
    ("GET", "/console/imports"): _IMPORTS,
    ("POST", "/console/imports"): MATRIX[("POST", "/v1/beneficiaries/imports")],
    ("GET", "/console/imports/{import_id}"): MATRIX[("GET", "/v1/beneficiaries/imports/{import_id}")],
    ("GET", "/console/imports/{import_id}/errors.csv"): MATRIX[
        ("GET", "/v1/beneficiaries/imports/{import_id}/errors.csv")
    ],
    # `ledger verify` needs no database; it is offered to those who can take an export to check.
    ("GET", "/console/ledger/verify"): _EXPORT,
    ("POST", "/console/ledger/verify"): _EXPORT,
}
CONSOLE_PUBLIC_ROUTES: set[tuple[str, str]] = {
    ("GET", "/console/sign-in"),
    ("POST", "/console/sign-in"),
    ("POST", "/console/sign-out"),
    ("GET", "/console/language"),
}
"""Signing in and out (CSRF-checked) and the language switch."""
