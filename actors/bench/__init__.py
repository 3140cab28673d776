"""Benchmarks (not tests): throughput of the pure parts against a ceiling in the same run."""
