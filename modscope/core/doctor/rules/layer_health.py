"""Findings about layers that cannot learn though nothing fails: a ReLU whose every output is
zero (dead units) and a sigmoid or tanh whose outputs sit at their rails (saturated)."""

from __future__ import annotations

from modscope.core.contract.findings import Finding, FindingKind
from modscope.core.contract.fmt import plural
from modscope.core.doctor.rules.wording import finding, where

MIN_OUTPUTS = 16
"""Both kinds judge only calls that give at least this many output elements: the two outputs of
a 2-unit layer are both below zero by chance once in four initialisations."""

SATURATED_FRACTION = 0.5
"""`saturated`: more than this share of a saturating activation's outputs at the rails (within
1% of its output range from either end: `core.contract.layer_types.SATURATION_MARGIN`) ..."""


def _span(steps: int) -> str:
    return (
        "in the step checked" if steps == 1 else f"in each of the {plural(steps, 'step')} checked"
    )


def dead_units(path: str, type_name: str, steps: int, step: int) -> Finding:
    """Every output of a ReLU-like module exactly zero, in every step checked."""
    return finding(
        FindingKind.DEAD_UNITS,
        path,
        f"every output of {where(path, type_name)} is exactly zero {_span(steps)}: its units are "
        "dead, so no gradient flows back through it and the layers before it stop learning from "
        "this path, while nothing fails to show it (a bias or weights that drive every "
        "pre-activation below zero, often after a too-large learning-rate step).",
        "initialise the layer before it so its pre-activations straddle zero (the default "
        "nn.Linear/nn.Conv init, or nn.init.kaiming_uniform_ with a zero bias); lower the "
        "learning rate; or use nn.LeakyReLU(0.01) / nn.GELU(), which pass a gradient below zero",
        step=step,
    )


def saturated(path: str, type_name: str, fraction: float, steps: int, step: int) -> Finding:
    """Most outputs of a sigmoid/tanh-like module at its rails, in every step checked."""
    return finding(
        FindingKind.SATURATED,
        path,
        f"{fraction:.0%} of the outputs of {where(path, type_name)} are at its rails (within 1% "
        f"of its output range from either end) {_span(steps)}: its slope there is near zero, so "
        "almost no gradient reaches the layers before it.",
        "scale its inputs down: an nn.LayerNorm or nn.BatchNorm1d before it, "
        "initialise the layer before it with a smaller gain (nn.init.xavier_uniform_), or lower "
        "the learning rate; for logits fed to a loss, drop the sigmoid and use "
        "nn.BCEWithLogitsLoss",
        step=step,
    )
