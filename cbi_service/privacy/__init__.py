"""A person's rights over their data (§13): access to everything held about them, erasure, retention."""
