"""Key rotation: new key versions and the background re-encryption that retires the old ones (§13)."""
