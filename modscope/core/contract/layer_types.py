"""Layer health as frozen data (no torch): each module's output statistics and learning signs
for one iteration, as `run --layers` writes them and the app's layers view paints them."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from modscope.core.contract.tensors import finite_or_none


class Activation(str, enum.Enum):
    """What a module's output is read for besides its statistics (docs/design.md section 2)."""

    RELU_LIKE = "relu-like"
    """nn.ReLU, nn.ReLU6, nn.Threshold: an output of exactly zero passes no gradient back."""
    SATURATING = "saturating"
    """nn.Sigmoid, nn.Tanh, nn.Hardsigmoid, nn.Hardtanh, nn.Softsign: bounded on both sides."""


@dataclass(frozen=True)
class OutputStats:
    """A module's output in one iteration, over every call and every element: `calls` forward
    calls gave `numel` elements in all (the first floating tensor of each output)."""

    mean: float | None
    std: float | None
    absmax: float | None
    numel: int
    calls: int

    def to_json(self) -> dict[str, Any]:
        return {
            "mean": finite_or_none(self.mean),
            "std": finite_or_none(self.std),
            "absmax": finite_or_none(self.absmax),
            "numel": self.numel,
            "calls": self.calls,
        }


@dataclass(frozen=True)
class ParamHealth:
    """One of a module's own parameters after an iteration: its gradient's norm (None: no
    `.grad`) and how far the step moved it, ‖new - old‖ / ‖old‖ (0.0: unchanged; None: no
    ratio, as `StateDiff.rel_change`)."""

    name: str
    grad_norm: float | None
    update_ratio: float | None

    def to_json(self) -> dict[str, float | None]:
        return {
            "grad_norm": finite_or_none(self.grad_norm),
            "update_ratio": finite_or_none(self.update_ratio),
        }


@dataclass(frozen=True)
class LayerStats:
    """One module after one iteration.

    `dead` is the fraction of its output elements that are exactly zero; `saturated` the
    fraction at the rails (within `SATURATION_MARGIN` of the output range from either end), for
    a saturating activation only. `grad_norm` is the norm of all its own parameters' gradients
    together; `update_ratio` that of its largest own parameter (its weight, for Linear and Conv:
    the one a learning rate is tuned for). `params` has each own parameter apart.
    """

    path: str
    type_name: str
    output: OutputStats | None
    dead: float | None
    saturated: float | None
    grad_norm: float | None
    update_ratio: float | None
    params: tuple[ParamHealth, ...] = ()
    activation: Activation | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "type": self.type_name,
            "output": self.output.to_json() if self.output is not None else None,
            "dead": finite_or_none(self.dead),
            "saturated": finite_or_none(self.saturated),
            "grad_norm": finite_or_none(self.grad_norm),
            "update_ratio": finite_or_none(self.update_ratio),
            "params": {p.name: p.to_json() for p in self.params},
        }


@dataclass(frozen=True)
class LayerStep:
    """Every watched module after the iteration `step`, in `named_modules()` order."""

    step: int
    modules: tuple[LayerStats, ...]

    def to_json(self) -> dict[str, Any]:
        """The `layers` line of `run --layers --json` (docs/design.md section 2)."""
        return {
            "event": "layers",
            "step": self.step,
            "modules": [m.to_json() for m in self.modules],
        }


SATURATION_MARGIN = 0.01
"""A saturating activation's output is at a rail when it lies within this fraction of its
output range from either end: a sigmoid below 0.01 or above 0.99 (its slope there is under
0.01), a tanh beyond ±0.98 (slope under 0.04)."""
