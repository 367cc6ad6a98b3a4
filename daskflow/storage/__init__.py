"""Persisted results and run records on fsspec storage (arrives with result persistence)."""
