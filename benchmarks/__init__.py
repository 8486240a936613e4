"""Benchmarks of the contract's performance targets; `common` holds what the scripts share."""
