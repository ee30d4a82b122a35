"""Headless rendering of `tree`, `run` and `check`: rich tables, or strict JSON."""
