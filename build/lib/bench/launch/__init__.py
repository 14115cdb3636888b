"""Launching many runs at once: choosing how many jobs share one GPU."""
