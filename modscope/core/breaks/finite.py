"""NaN/Inf checks for break conditions: flags decided at once or deferred, and their cache.

On the CPU each check is decided where it runs. Elsewhere reading a flag back is a device sync,
so a module's check leaves a 0-d flag on its device, with the summaries captured then, and the
phase's flags come back together after the phase: one transfer per device.
"""

from __future__ import annotations

import cmath
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from modscope.core.contract.tensors import TensorSummary
from modscope.core.stats.summary import PendingSummary, capture, flatten_tensors, resolve
from modscope.core.stats.tensor_memo import TensorMemo

# Device types whose flags are on the host already: reading one back is no sync, so a check
# there is decided at once. Tests empty this to run the deferred path on the CPU.
_HOST_DEVICE_TYPES = frozenset({"cpu"})

Flag = bool | torch.Tensor
"""True/False when known; a 0-d bool tensor on its device while still to be read back."""
Seen = torch.Tensor | PendingSummary
"""A tensor as seen: itself (summarized only if it is reported) or its summary, captured."""


def floats(*values: Any) -> list[torch.Tensor]:
    """The floating (and complex) strided tensors among `values`' leaves: what can hold NaN."""
    return [
        t
        for v in values
        for t in flatten_tensors(v)
        if t is not None
        and (t.is_floating_point() or t.is_complex())
        and t.layout is torch.strided
        and t.device.type != "meta"
        and t.numel() > 0
    ]


def any_bad(tensors: Iterable[torch.Tensor]) -> Flag:
    """Whether some tensor holds NaN/Inf (call under `torch.no_grad()`)."""
    found: Flag = False
    for t in tensors:
        try:
            bad = _bad(t.detach())
        except (RuntimeError, NotImplementedError, TypeError):
            continue  # a tensor subclass that refuses the op: nothing to say about it
        if bad is True:
            return True
        found = or_(found, bad)
    return found


def _bad(t: torch.Tensor) -> Flag:
    if t.device.type not in _HOST_DEVICE_TYPES:
        return ~torch.isfinite(t).all()
    # On the host a sum is many times faster than isfinite().all(), and exact when it
    # is finite: one NaN or infinite value makes the sum NaN or infinite. A non-finite sum may
    # also be an overflow of finite values: the exact check decides then.
    total = t.sum().item()
    if cmath.isfinite(total) if isinstance(total, complex) else math.isfinite(total):
        return False
    return not bool(torch.isfinite(t).all())


def or_(a: Flag, b: Flag) -> Flag:
    """`a or b`, a tensor flag left on its device."""
    if a is True or b is True:
        return True
    if a is False:
        return b
    if b is False:
        return a
    assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
    return a | b.to(a.device)


def and_not(a: Flag, b: Flag) -> Flag:
    """`a and not b`."""
    if a is False or b is True:
        return False
    if b is False:
        return a
    assert isinstance(b, torch.Tensor)
    if a is True:
        return ~b
    assert isinstance(a, torch.Tensor)
    return a & ~b.to(a.device)


def host_values(values: Sequence[bool | float | torch.Tensor]) -> list[Any]:
    """Python values of `values`, the tensors among them read back with one transfer per
    device."""
    out: list[Any] = list(values)
    by_device: dict[torch.device, list[int]] = {}
    for i, v in enumerate(values):
        if isinstance(v, torch.Tensor):
            by_device.setdefault(v.device, []).append(i)
    for indices in by_device.values():
        read = torch.stack([values[i] for i in indices]).cpu().tolist()  # type: ignore[misc]
        for i, value in zip(indices, read, strict=True):
            out[i] = value
    return out


def summaries(seen: Sequence[Seen]) -> tuple[TensorSummary | None, ...]:
    """The summaries of what was seen (`as_seen`), resolved together."""
    return tuple(resolve([capture(s) if isinstance(s, torch.Tensor) else s for s in seen]))


def as_seen(tensors: Sequence[torch.Tensor], flag: Flag) -> list[Seen]:
    """What to keep of `tensors` for a report: the tensors while their check is decided at once
    (summarized only when it trips), their summaries, captured now, while it is deferred."""
    if isinstance(flag, torch.Tensor):
        return [capture(t) for t in tensors]
    return list(tensors)


def nonfinite(s: TensorSummary | None) -> bool:
    """Whether a summary counts any NaN or Inf."""
    return s is not None and bool(s.nan or s.inf)


class FinitenessCache:
    """`any_bad`, each tensor's answer remembered until the tensor changes: the output one
    module gives is the input the next one gets, and one gradient reaches the tensor hooks of
    both. Cleared before each phase and with the iteration."""

    def __init__(self) -> None:
        self._known: TensorMemo[Flag] = TensorMemo()

    def clear(self) -> None:
        """Forget every answer."""
        self._known.clear()

    def check(self, tensors: Iterable[torch.Tensor]) -> Flag:
        """Whether some tensor holds NaN/Inf (call under `torch.no_grad()`)."""
        found: Flag = False
        for t in tensors:
            bad = self._known.get(t)
            if bad is None:
                bad = any_bad([t])
                self._known.put(t, bad)
            if bad is True:
                return True
            found = or_(found, bad)
        return found
