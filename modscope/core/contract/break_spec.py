"""What a break condition is, as plain data: the `--break COND` grammar (torch-free).

The app's breakpoints dialog, the session controller and the engine share these; nothing here
imports torch, so the app can build and show them without it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field


class BreakSpecError(ValueError):
    """A `--break` condition that does not parse, or names no module of the model."""


class BreakMetric(str, enum.Enum):
    """What a break condition watches."""

    NAN = "nan"
    """The first NaN/Inf, located at its origin (a module, the loss, the optimizer, the batch)."""
    LOSS = "loss"
    """The loss after the forward phase."""
    GRAD_NORM = "grad-norm"
    """The norm of the gradients after backward: all trainable parameters', or a module's."""
    STEP = "step"
    """The iteration about to run."""
    OUTPUT_ABSMAX = "output-absmax"
    """The largest magnitude in a module's output, each time it runs."""


_GLOBAL_OPS: dict[BreakMetric, tuple[str, ...]] = {
    BreakMetric.LOSS: (">", "<"),
    BreakMetric.GRAD_NORM: (">",),
    BreakMetric.STEP: ("=",),
}
_MODULE_OPS: dict[BreakMetric, tuple[str, ...]] = {
    BreakMetric.OUTPUT_ABSMAX: (">",),
    BreakMetric.GRAD_NORM: (">",),
}


def _conditions() -> tuple[str, ...]:
    # Read from the tables `parse` follows, so that a condition it takes is one it lists.
    said = [BreakMetric.NAN.value]
    for metric, ops in _GLOBAL_OPS.items():
        number = "N" if metric is BreakMetric.STEP else "X"
        said += [f"{metric.value}{op}{number}" for op in ops]
    said += [f"MODULE:{metric.value}{op}X" for metric, ops in _MODULE_OPS.items() for op in ops]
    return tuple(said)


CONDITIONS = _conditions()
"""The conditions `--break` takes, as typed (`nan`, `loss>X`, ..., `MODULE:grad-norm>X`): the
command line's help and the app's break dialog list these."""
GRAMMAR = f"{', '.join(CONDITIONS[:-1])} or {CONDITIONS[-1]}"
"""The same conditions in a sentence (every refusal repeats them)."""


@dataclass(frozen=True)
class BreakCondition:
    """One `--break` condition: `metric op threshold`, on `module` for the module conditions.

    `module` is None for a whole-model condition and a dotted path (`""` the root) for
    `MODULE:output-absmax>X` and `MODULE:grad-norm>X`; `op` is `>`, `<` or `=` (`""` for
    `nan`); `threshold` is the number compared with (an integer for `step=N`). `text` is the
    condition as it was typed (it names the condition in a break's report).
    """

    metric: BreakMetric
    op: str = ""
    threshold: float | None = None
    module: str | None = None
    text: str = field(default="", compare=False)

    @classmethod
    def parse(cls, text: str) -> BreakCondition:
        """Parse `nan`, `loss>3.5`, `step=7`, `blocks.0.attn:output-absmax>1e4`, ...

        A module path may itself contain colons and dots: the condition is found from the
        right. Raises `BreakSpecError`, naming the grammar, for anything else.
        """
        typed = text.strip()
        module, colon, body = typed.rpartition(":")
        module_path: str | None = None
        if colon:
            module_path = "" if module in ("", ".") else module
        if module_path is None and body == BreakMetric.NAN.value:
            return cls(BreakMetric.NAN, text=typed)
        ops = _MODULE_OPS if module_path is not None else _GLOBAL_OPS
        for metric, allowed in ops.items():
            name = metric.value
            if not body.startswith(name) or len(body) == len(name):
                continue
            op, number = body[len(name)], body[len(name) + 1 :].strip()
            if op not in allowed or body[len(name) :].startswith(("<=", ">=", "==")):
                continue
            threshold = _number(typed, number, integer=metric is BreakMetric.STEP)
            return cls(metric, op, threshold, module_path, text=typed)
        raise BreakSpecError(f"break condition {text!r}: expected {GRAMMAR}")

    @property
    def watches_module(self) -> bool:
        """True for `MODULE:output-absmax>X` and `MODULE:grad-norm>X`."""
        return self.module is not None

    def holds(self, value: float) -> bool:
        """True when `value` meets the comparison (NaN meets none: `nan` watches for it)."""
        assert self.threshold is not None
        if self.op == ">":
            return value > self.threshold
        if self.op == "<":
            return value < self.threshold
        return value == self.threshold

    def __str__(self) -> str:
        if self.text:
            return self.text
        if self.metric is BreakMetric.NAN:
            return "nan"
        number = f"{self.threshold:g}" if self.threshold is not None else ""
        if self.metric is BreakMetric.STEP and self.threshold is not None:
            number = str(int(self.threshold))
        prefix = "" if self.module is None else f"{self.module or '.'}:"
        return f"{prefix}{self.metric.value}{self.op}{number}"


def _number(text: str, number: str, *, integer: bool) -> float:
    if integer:
        try:
            step = int(number)
        except ValueError:
            raise BreakSpecError(
                f"break condition {text!r}: step=N needs a whole number, e.g. step=3"
            ) from None
        if step < 1:
            raise BreakSpecError(f"break condition {text!r}: steps count from 1")
        return step
    try:
        value = float(number)
    except ValueError:
        raise BreakSpecError(
            f"break condition {text!r}: {number!r} is not a number (expected {GRAMMAR})"
        ) from None
    if not math.isfinite(value):
        # `loss>inf` never holds and `loss<inf` holds at once: neither is a condition to wait
        # for, and a NaN or Inf is what `nan` watches.
        raise BreakSpecError(
            f"break condition {text!r}: compare with a finite number, not {number!r}; "
            "to stop at the first NaN or Inf, use `nan`"
        )
    return value


def parse_conditions(texts: list[str] | tuple[str, ...]) -> list[BreakCondition]:
    """Parse each `--break` text; the first bad one raises `BreakSpecError`."""
    return [BreakCondition.parse(t) for t in texts]
