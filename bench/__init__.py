"""Tally's benchmark: `python -m bench` measures the points system on a real PostgreSQL.

It writes its figures to docs/performance.md between its own markers, so other benchmarks can
keep their sections in the same file.
"""
