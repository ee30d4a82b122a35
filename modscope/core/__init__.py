"""The engine: torch + stdlib only. Import submodules directly; this package imports nothing."""
