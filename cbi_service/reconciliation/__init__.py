"""Reconciliation of the ledger's disbursements against a provider's statement."""
