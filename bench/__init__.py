"""Benchmarks for chatd, with the same load against a reference IRC server."""
