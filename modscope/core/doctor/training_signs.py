"""The doctor's rules on how iterations train, from what a session records anyway.

`update-ratio`, `training-in-eval`, `grad-accumulation` and `torch-warning` read each step's
`StepRecord` (the state diff's |Δw|/|w|, gradient summaries, the mode), the model as it is after
the step, and the warnings the session saw: no extra pass, no tensor read, no hook.
"""

from __future__ import annotations

import math
import os
import weakref
from collections import deque
from collections.abc import Sequence

import torch
from torch import nn

from modscope.core.contract.findings import Finding
from modscope.core.contract.steps import StepRecord
from modscope.core.doctor import rules
from modscope.core.model.modes import mode_matters
from modscope.core.script.warning_capture import CapturedWarning
from modscope.core.stats.tensor_stats import combined_norm

_EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)
_LEGACY_HOOK_WARNING = "Using a non-full backward hook"
"""PyTorch's warning about a script's own `register_backward_hook`: a `legacy-backward-hook`
finding already."""

Modules = list[tuple[str, nn.Module]]
Named = list[tuple[str, nn.Parameter]]


class TrainingSigns:
    """State across steps for the training rules; one per session, fed every completed step."""

    def __init__(self) -> None:
        # Per weight, (ratio, loss) of the last steps that moved it.
        self._ratios: dict[str, deque[tuple[float, float | None]]] = {}
        self._from_zero: set[str] = set()
        self._reported_ratio: set[str] = set()
        self._grads: dict[str, weakref.ref[torch.Tensor]] = {}
        self._norms: dict[str, float] = {}
        self._growth: list[float] = []
        # The owners of the parameters of the `modules` list they were found in: the doctor's
        # walk hands the same list back while the structure is unchanged (`Structure`).
        self._owners: tuple[Modules, _Owners] | None = None

    # -- update-ratio ------------------------------------------------------------------------------

    def update_ratios(
        self,
        record: StepRecord,
        modules: Modules,
        named: Named,
        optimizer: torch.optim.Optimizer | None,
    ) -> list[Finding]:
        """Layers' weights whose |Δw|/|w| stayed out of bounds for `UPDATE_RATIO_STEPS` steps.

        Only weights of two dimensions or more count: biases and norms' weights start at 0 or 1
        and move by their own rules, embeddings move only the rows in the batch, and a weight
        that started at zero (zero-init residual branches, LoRA) has a ratio falling as 1/step
        whatever the learning rate. Frozen weights and steps that did not move a weight (an
        accumulation step without optimizer.step()) are skipped. Too large only while the loss
        did not fall over those steps: a small weight growing fast towards what the data asks
        (a regression head, from 0.6 to 2 in three steps while the loss falls from 5 to 2) has
        large ratios and nothing wrong.
        """
        diff = record.diff
        changed = set(diff.changed)
        owners = self._owners_of(modules)
        out: dict[bool, list[rules.WeightRatio]] = {True: [], False: []}
        rates: dict[int, float | None] | None = None
        for name, p in named:
            if name in self._reported_ratio:
                continue
            if not _is_layer_weight(p) or id(p) in owners.embedded or name not in changed:
                continue
            ratio = diff.rel_change.get(name)
            if ratio is None:
                self._from_zero.add(name)  # moved from all zeros (or changed shape)
                continue
            if name in self._from_zero or not math.isfinite(ratio):
                continue
            seen = self._ratios.setdefault(name, deque(maxlen=rules.UPDATE_RATIO_STEPS))
            seen.append((ratio, record.loss))
            if len(seen) == rules.UPDATE_RATIO_STEPS and self._out_of_bounds(seen):
                self._reported_ratio.add(name)
                path, type_name = owners.of.get(id(p), ("", ""))
                ratios = tuple(r for r, _ in seen)
                if rates is None:
                    rates = _learning_rates(optimizer)
                weight = rules.WeightRatio(name, path, type_name, ratios, rates.get(id(p)))
                out[min(ratios) > rules.UPDATE_RATIO_HIGH].append(weight)
        return [rules.update_ratio(weights, record.step) for weights in out.values() if weights]

    def _owners_of(self, modules: Modules) -> _Owners:
        if self._owners is None or self._owners[0] is not modules:
            self._owners = (modules, _Owners(modules))
        return self._owners[1]

    @staticmethod
    def _out_of_bounds(seen: deque[tuple[float, float | None]]) -> bool:
        ratios = [r for r, _ in seen]
        if max(ratios) < rules.UPDATE_RATIO_LOW:
            return True
        if min(ratios) <= rules.UPDATE_RATIO_HIGH:
            return False
        first, last = seen[0][1], seen[-1][1]
        return first is None or last is None or not last < first

    # -- training-in-eval --------------------------------------------------------------------------

    def training_in_eval(
        self, record: StepRecord, modules: Modules, named: Named, requested: bool | None
    ) -> list[Finding]:
        """The model in eval mode after a step that trained it (gradients and moved weights),
        naming the modules in eval mode whose forward depends on the mode.

        A submodule in the other mode than the root is `mode-mismatch`'s: this rule fires only
        when the root itself is in eval mode. Not when a person asked for eval through modscope
        (`requested` False: `run --eval`, the app's key).
        """
        if not modules or modules[0][1].training or requested is False:
            return []
        if not _trained(record, named):
            return []
        affected = [
            (path, type(m).__name__) for path, m in modules if not m.training and mode_matters(m)
        ]
        return [rules.training_in_eval(affected, record.step)] if affected else []

    # -- grad-accumulation -------------------------------------------------------------------------

    def grad_accumulation(self, record: StepRecord, named: Named) -> list[Finding]:
        """Gradients that keep growing while the optimizer steps: never cleared.

        Four signs together, from the gradients the session summarises anyway: every `.grad`
        is the same tensor as after the step before (`zero_grad()`'s default sets them to None,
        so a new tensor each step: the common clean loop never gets further); the weights
        moved (an accumulation step that skips optimizer.step() breaks the streak, so a
        deliberate accumulation over k steps never fires); the global gradient norm rose
        `GRAD_GROWTH_STEPS` times in a row, to `GRAD_GROWTH_FACTOR` times where it started;
        and at each of those steps nearly every parameter's gradient grew
        (`GRAD_GROWTH_SHARE`): a sum of gradients grows everywhere, while a clean loop whose
        global norm climbs (a transformer under SGD with momentum, after its loss dips) has
        a third of its gradients shrinking.
        """
        trainable = [(n, p) for n, p in named if p.requires_grad]
        grads = {n: p.grad for n, p in trainable if p.grad is not None}
        kept = (
            bool(grads)
            and bool(self._grads)
            and all(n in self._grads and self._grads[n]() is g for n, g in grads.items())
        )
        self._grads = {n: weakref.ref(g) for n, g in grads.items()}
        norms = _grad_norms(record, grads)
        previous, self._norms = self._norms, norms
        changed = set(record.diff.changed)
        moved = any(n in changed for n, _ in trainable)
        if not (kept and moved and norms):
            self._growth = [_total(norms)] if norms else []
            return []
        total = _total(norms)
        if self._growth and (total <= self._growth[-1] or not _grew_everywhere(norms, previous)):
            self._growth = []
        self._growth.append(total)
        growth = self._growth
        if (
            len(growth) > rules.GRAD_GROWTH_STEPS
            and growth[0] > 0
            and growth[-1] >= rules.GRAD_GROWTH_FACTOR * growth[0]
        ):
            return [rules.grad_accumulation(list(growth), record.step)]
        return []

    # -- torch-warning -----------------------------------------------------------------------------

    @staticmethod
    def torch_warnings(shown: Sequence[CapturedWarning], step: int) -> list[Finding]:
        """The warnings PyTorch showed during the step (the script's own and other libraries'
        reach the user as before, and are no finding; nor is the legacy-backward-hook one)."""
        out = []
        for w in shown:
            if not w.from_torch or w.message.startswith(_LEGACY_HOOK_WARNING):
                continue
            location = f"{_short(w.file)}:{w.line}" if w.file and w.line else _short_origin(w)
            origin = _short_origin(w)
            out.append(rules.torch_warning(w.category, w.message, location, origin, step))
        return out


class _Owners:
    """Which module holds each parameter, and which parameters an embedding holds."""

    def __init__(self, modules: Modules) -> None:
        self.of: dict[int, tuple[str, str]] = {}
        self.embedded: set[int] = set()
        for path, module in modules:
            for p in module._parameters.values():
                if p is None:
                    continue
                self.of.setdefault(id(p), (path, type(module).__name__))
                if isinstance(module, _EMBEDDINGS):
                    self.embedded.add(id(p))  # tied LM heads share the embedding's rows


def _is_layer_weight(p: nn.Parameter) -> bool:
    return p.requires_grad and p.dim() >= 2 and p.is_floating_point()


def _learning_rates(optimizer: torch.optim.Optimizer | None) -> dict[int, float | None]:
    """Each optimized parameter's learning rate by id (its first group's): one lookup per
    reported weight, where searching the groups for each made thousands of weights
    reported at once quadratic."""
    rates: dict[int, float | None] = {}
    for group in optimizer.param_groups if optimizer is not None else ():
        lr = group.get("lr")
        rate = float(lr) if isinstance(lr, float | int) else None
        for q in group["params"]:
            rates.setdefault(id(q), rate)
    return rates


def _trained(record: StepRecord, named: Named) -> bool:
    """True when the step ran backward and moved a trainable parameter."""
    changed = set(record.diff.changed)
    trainable = [n for n, p in named if p.requires_grad]
    has_grad = any(record.grads.get(n) is not None for n in trainable)
    return any(n in changed for n in trainable) and (has_grad or record.loss is not None)


def _grad_norms(record: StepRecord, grads: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each gradient's norm from the step's summaries; empty when one is unknown or
    non-finite (`nonfinite` speaks then)."""
    norms = {}
    for name in grads:
        s = record.grads.get(name)
        if s is None or s.norm is None or not math.isfinite(s.norm):
            return {}
        norms[name] = s.norm
    return norms


def _total(norms: dict[str, float]) -> float:
    total = combined_norm(norms.values())
    assert total is not None  # called with gradients only
    return total


def _grew_everywhere(norms: dict[str, float], previous: dict[str, float]) -> bool:
    grew = sum(1 for n, v in norms.items() if n in previous and v > previous[n])
    return grew >= rules.GRAD_GROWTH_SHARE * len(norms)


def _short(path: str) -> str:
    """A path relative to the working directory when it lies below it."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def _short_origin(w: CapturedWarning) -> str:
    file, _, line = w.origin.rpartition(":")
    torch_dir = os.path.dirname(os.path.dirname(torch.__file__))
    if file.startswith(torch_dir + os.sep):
        return f"{os.path.relpath(file, torch_dir)}:{line}"
    return f"{_short(file)}:{line}"
