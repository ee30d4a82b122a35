"""Findings about how the iterations train: update sizes mismatched to a layer, training in
eval mode, gradients never cleared, and the warnings PyTorch shows meanwhile."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from modscope.core.contract.findings import Finding, FindingKind
from modscope.core.contract.fmt import plural
from modscope.core.doctor.rules.wording import accessor, finding, listing, where

UPDATE_RATIO_HIGH = 0.2
"""`update-ratio`: a weight whose |Δw|/|w| stays above this ... A healthy step changes a weight
by about 1e-3 of its norm. Adam moves every element by about its learning rate, most of all in
its first steps: lr 1e-2 gives 0.14 on a small ResNet's classifier at step 1 and stays above 0.1
for a while, and a GPT-2-style c_proj initialised at std 0.01 sees 0.1 at lr 1e-3: normal for
usual learning rates, so the bound sits above them."""

UPDATE_RATIO_LOW = 1e-6
"""... or below this ... SGD with momentum 0.9 starts ten times below its steady step (the
velocity builds up over some ten steps), so a steady-state floor of 1e-5 is 1e-6 in the first
steps: an LSTM's input weights train at 3.5e-6 with lr 0.01 there."""

UPDATE_RATIO_STEPS = 3
"""... in each of this many steps that moved it (one step proves nothing: Adam's first step is
its largest)."""

GRAD_GROWTH_STEPS = 2
"""`grad-accumulation`: the global gradient norm rose in this many optimizer steps in a row ..."""

GRAD_GROWTH_FACTOR = 2.0
"""... to at least this many times where it started, while `.grad` kept the same tensors (never
set to None). Gradients summed over k steps of a similar batch grow about k times ..."""

GRAD_GROWTH_SHARE = 0.9
"""... and at each step at least this share of the parameters' gradients grew too."""


@dataclass(frozen=True)
class WeightRatio:
    """One layer weight's |Δw|/|w| over the last `UPDATE_RATIO_STEPS` steps that moved it."""

    name: str
    path: str
    type_name: str
    ratios: tuple[float, ...]
    lr: float | None


def update_ratio(weights: Sequence[WeightRatio], step: int) -> Finding:
    """`weights` out of bounds on the same side at `step` (all too large, or all too small),
    reported together: a learning rate too high for the whole model is one finding."""
    first = weights[0]
    high = min(first.ratios) > UPDATE_RATIO_HIGH
    rates = sorted({w.lr for w in weights if w.lr is not None})
    rate = f" ({listing([f'{r:g}' for r in rates])})" if rates else ""
    steps = f"steps {step - len(first.ratios) + 1}-{step}"
    if len(weights) == 1:
        shown = ", ".join(f"{r:.2g}" for r in first.ratios)
        head = (
            f"{first.name} of {where(first.path, first.type_name)} changes by {shown} of its "
            f"norm per step (|Δw|/|w| at {steps})"
        )
        layer, group = "this layer", f"{accessor(first.path)}.parameters()"
    else:
        shown = listing([f"{w.name} {w.ratios[-1]:.2g}" for w in weights])
        head = (
            f"{len(weights)} layer weights change by {'more' if high else 'less'} than "
            f"{UPDATE_RATIO_HIGH if high else UPDATE_RATIO_LOW:g} of their norm per step at "
            f"each of {steps} (|Δw|/|w| at step {step}: {shown})"
        )
        layer, group = "these layers", "their_parameters"
    if high:
        what = (
            f"above {UPDATE_RATIO_HIGH:g} while the loss did not fall: the learning "
            f"rate{rate} is too high for {layer}; each step rewrites a large part of the "
            "weight, so training overshoots and turns unstable."
        )
        fix = (
            f"lower the learning rate, for {layer} alone with a param group of its own: "
            f'torch.optim.Adam([{{"params": {group}, "lr": 1e-4}}, '
            '{"params": other_parameters}]); healthy ratios are about 1e-3'
        )
    else:
        what = (
            f"below {UPDATE_RATIO_LOW:g}: {layer} barely learn{'s' if len(weights) == 1 else ''}; "
            f"the learning rate{rate} is too low, or the gradient vanishes before "
            f"{'it' if len(weights) == 1 else 'them'}."
        )
        fix = (
            f"raise the learning rate, for {layer} alone with a param group of its own: "
            f'torch.optim.SGD([{{"params": {group}, "lr": 0.1}}, '
            '{"params": other_parameters}]); or look at the gradient (input scale, init, '
            "normalisation); healthy ratios are about 1e-3"
        )
    return finding(
        FindingKind.UPDATE_RATIO,
        first.name,
        f"{head}, {what}",
        fix,
        paths=[w.name for w in weights] if len(weights) > 1 else (),
        step=step,
    )


def training_in_eval(modules: Sequence[tuple[str, str]], step: int) -> Finding:
    """`modules`: (path, type name) of the modules in eval mode whose forward depends on it."""
    names = [where(path, type_name) for path, type_name in modules]
    return finding(
        FindingKind.TRAINING_IN_EVAL,
        "",
        f"step {step} trained the model (backward and an optimizer step) while it is in eval "
        f"mode: {plural(len(modules), 'module')} "
        f"{'behaves' if len(modules) == 1 else 'behave'} differently in training "
        f"({listing(names)}): BatchNorm normalises with its running statistics, frozen, and "
        "dropout is off, so the model trains as it will not be evaluated.",
        "call model.train() before the training iterations (and model.eval() only around "
        "evaluation, then model.train() again); `modscope run --eval` asks for eval on purpose",
        paths=[path for path, _ in modules] if len(modules) > 1 else (),
        step=step,
    )


def grad_accumulation(norms: Sequence[float], step: int) -> Finding:
    """`norms`: the global gradient norm over the steps in which it kept growing."""
    shown = ", ".join(f"{n:.3g}" for n in norms)
    first = step - len(norms) + 1
    return finding(
        FindingKind.GRAD_ACCUMULATION,
        "",
        f"the gradients are never cleared: their global norm grew step over step ({shown} at "
        f"steps {first}-{step}) while .grad kept the same tensors and the optimizer stepped "
        "each time, so every step applies the sum of all gradients so far.",
        "clear them every iteration, before backward(): optimizer.zero_grad() in train_step; "
        "to accumulate over k batches on purpose, step and clear every k: "
        "if (i + 1) % k == 0: optimizer.step(); optimizer.zero_grad()",
        step=step,
    )


def torch_warning(
    category: str,
    message: str,
    location: str,
    origin: str,
    step: int,
) -> Finding:
    """`location`: the user's `file:line` (or the warning's own when none was on the stack);
    `origin`: the warning's own `file:line`, mentioned when it differs."""
    inside = f" (raised in {origin})" if origin != location else ""
    said = message.rstrip()
    said += "" if said.endswith((".", "!", "?")) else "."
    return finding(
        FindingKind.TORCH_WARNING,
        "",
        f"PyTorch warned at step {step}, at {location}{inside}: {category}: {said}",
        "read the warning: it names what PyTorch did instead of what the code asks (a loss "
        "whose input and target broadcast: give both the same shape, e.g. target.view_as(out)); "
        "warnings.filterwarnings('ignore', ...) silences it once it is understood",
        step=step,
        subject=f"{category}: {message} @ {location}",
    )
