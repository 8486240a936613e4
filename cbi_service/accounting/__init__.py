"""Accounting: each programme's chart of accounts in the ledger, the postings that move its money, and the
ledger's reads (accounts, entries, trial balance)."""
