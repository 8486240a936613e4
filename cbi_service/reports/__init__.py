"""Figures partners report to the regional platform (people reached), read from the disbursement records."""
