"""`dead-units` and `saturated`: from the layer statistics of the iterations `check` runs in its
sandbox (a `LayerCollector` on the sandboxed model: `run` and the app add no forward hooks for
them)."""

from __future__ import annotations

from dataclasses import dataclass

from modscope.core.contract.findings import Finding
from modscope.core.contract.layer_types import Activation, LayerStats, LayerStep
from modscope.core.doctor import rules


@dataclass
class _Seen:
    """One activation module over the steps checked so far."""

    stats: LayerStats
    ran: int = 0
    always_dead: bool = True
    always_saturated: bool = True
    least_saturated: float = 1.0


class LayerHealth:
    """Reads each checked step's `LayerStep`; `findings()` names the ReLU-like modules whose
    outputs were all exactly zero, and the saturating ones with more than
    `rules.SATURATED_FRACTION` of their outputs at the rails, in every step they ran.

    Only activation modules are judged: an all-zero output elsewhere is often by design (a
    zero-initialised residual branch or LoRA adapter starts at zero and learns from there); and
    only outputs of `rules.MIN_OUTPUTS` elements or more per call.
    """

    def __init__(self) -> None:
        self._seen: dict[str, _Seen] = {}
        self._steps = 0
        self._last_step = 0

    def observe(self, step: LayerStep) -> None:
        self._steps += 1
        self._last_step = step.step
        for stats in step.modules:
            out = stats.output
            if stats.activation is None or out is None or out.numel < rules.MIN_OUTPUTS * out.calls:
                continue
            seen = self._seen.setdefault(stats.path, _Seen(stats))
            seen.stats = stats
            seen.ran += 1
            seen.always_dead &= stats.dead == 1.0
            fraction = stats.saturated if stats.saturated is not None else 0.0
            seen.always_saturated &= fraction > rules.SATURATED_FRACTION
            seen.least_saturated = min(seen.least_saturated, fraction)

    def findings(self) -> list[Finding]:
        out = []
        for path, seen in self._seen.items():
            type_name = seen.stats.type_name
            if seen.stats.activation is Activation.RELU_LIKE and seen.always_dead:
                out.append(rules.dead_units(path, type_name, seen.ran, self._last_step))
            elif seen.stats.activation is Activation.SATURATING and seen.always_saturated:
                out.append(
                    rules.saturated(
                        path, type_name, seen.least_saturated, seen.ran, self._last_step
                    )
                )
        return out
