"""Deduplication of people: normalisation, blocking keys and scoring, shared by every registration path."""
