"""Backend-independent pipeline logic: batches, the reducer chain, ordered merging."""
