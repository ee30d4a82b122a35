"""How each finding severity looks, in the headless output and the app alike (rich styles)."""

from __future__ import annotations

from modscope.core.contract.findings import Severity

SEVERITY_STYLE: dict[Severity, str] = {
    Severity.ERROR: "bold red",
    Severity.WARNING: "yellow",
    Severity.INFO: "cyan",
}
"""A rich style string per severity."""

SEVERITY_MARK: dict[Severity, str] = {
    Severity.ERROR: "✗",
    Severity.WARNING: "!",
    Severity.INFO: "i",
}
"""The one-character mark in front of a finding."""
