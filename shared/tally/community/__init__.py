"""Community activity (seed 001): taps in, nightly rollups, the community endpoints."""
