"""Headless rendering of `tree`, `run` and `check`: rich tables on a terminal, strict JSON otherwise."""
