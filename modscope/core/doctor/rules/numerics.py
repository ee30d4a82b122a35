"""Findings about values: NaN/Inf in the loss, output, parameters, gradients or buffers, and
exploding or vanishing gradients."""

from __future__ import annotations

from collections.abc import Sequence

from modscope.core.contract.findings import Finding, FindingKind
from modscope.core.contract.fmt import plural
from modscope.core.doctor.rules.wording import finding, listing, where

EXPLODING_GRAD_NORM = 1e6
"""`exploding-gradient`: the global gradient norm (all trainable parameters) is above this, or
..."""

EXPLODING_GRAD_GROWTH = 10.0
"""... it grew more than this many times since the step before, to above
`EXPLODING_GROWTH_FLOOR`, while the loss did not fall (or is not known). A fixed bound alone
misfires: a freshly initialised network with a summed loss over a large batch starts with
gradient norms in the thousands and trains normally."""

EXPLODING_GROWTH_FLOOR = 1.0
"""Growth from a tiny norm to another small one (1e-8 to 1e-6) is no explosion."""

VANISHING_GRAD_NORM = 1e-10
"""`vanishing-gradient`: the global gradient norm is below this ..."""

VANISHING_MIN_LOSS = 1e-6
"""... while the loss is finite and its magnitude is above this (a converged model has tiny
gradients by right; a per-parameter rule would flag the bias before every BatchNorm)."""


def nonfinite(
    what: str,
    names: Sequence[str],
    step: int | None,
    module: str | None = None,
    module_type: str | None = None,
    value: float | None = None,
) -> Finding:
    """NaN/Inf in the loss, the output, parameters, gradients or buffers."""
    when = f"at step {step}" if step else "at load"
    source = ""
    if module is not None:
        source = (
            f" The first module whose output was non-finite, in forward order: "
            f"{where(module, module_type)}."
        )
    fix = (
        "find the op that makes it (log/sqrt/division of values <= 0, an overflow in float16); "
        "lower the learning rate or clip: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); "
        "torch.autograd.set_detect_anomaly(True) names the backward op"
    )
    if what in ("loss", "output"):
        shown = "nan" if value is None or value != value else ("inf" if value > 0 else "-inf")
        return finding(
            FindingKind.NONFINITE,
            module if module is not None else "",
            f"the {what} is {shown} {when}: backward spreads NaN/Inf into every gradient and one "
            f"optimizer step into the parameters.{source}",
            fix,
            step=step,
            subject=what,
        )
    noun = {"parameters": "parameter", "gradients": "gradient of", "buffers": "buffer"}[what]
    if what == "gradients":
        head = f"the gradient of {plural(len(names), 'parameter')} holds NaN/Inf {when}"
    else:
        head = f"{plural(len(names), noun)} {'holds' if len(names) == 1 else 'hold'} NaN/Inf {when}"
    return finding(
        FindingKind.NONFINITE,
        module if module is not None else names[0],
        f"{head} ({listing(names)}): once non-finite, training cannot recover.{source}",
        fix,
        paths=names,
        step=step,
        subject=what,
    )


def exploding_gradient(norm: float, step: int, previous: float | None = None) -> Finding:
    """`previous`: the norm at the step before, when the finding is about its growth."""
    if previous is not None and norm <= EXPLODING_GRAD_NORM:
        why = f"{norm / previous:.3g} times the {previous:.4g} of step {step - 1}"
    else:
        why = f"above {EXPLODING_GRAD_NORM:g}"
    return finding(
        FindingKind.EXPLODING_GRADIENT,
        "",
        f"the global gradient norm is {norm:.4g} at step {step} ({why}): steps this large make "
        "training unstable; the loss jumps or turns NaN.",
        "lower the learning rate, or clip between backward() and optimizer.step(): "
        "torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)",
        step=step,
    )


def vanishing_gradient(norm: float, loss: float, step: int) -> Finding:
    return finding(
        FindingKind.VANISHING_GRADIENT,
        "",
        f"the global gradient norm is {norm:.3g} at step {step} (below "
        f"{VANISHING_GRAD_NORM:g}) while the loss is {loss:.4g}: nothing trains.",
        "look for saturated activations (sigmoid/tanh), a detached graph or an init that zeroes "
        "everything; normalisation (nn.LayerNorm / nn.BatchNorm1d), residual connections or "
        "another init help",
        step=step,
    )
