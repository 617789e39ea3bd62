"""Matchmaking decided by community vote (seed 002)."""
