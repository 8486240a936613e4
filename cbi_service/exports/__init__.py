"""Ledger export for auditors (CSV, Parquet, XLSX, streamed) and its offline verification."""
