"""Proof of usefulness (seed 004)."""
