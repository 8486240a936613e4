"""External registries consulted during deduplication: the interface, the hashed-list adapter, the builder."""
