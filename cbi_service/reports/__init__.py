"""Figures partners report to the regional platform (people reached, R4V's 5W), read from the disbursement records."""
