"""The version of modscope (one place; `modscope.__version__` is the same)."""

VERSION = "0.1.0"
