"""What was worked out about a tensor, kept while the tensor is alive and unchanged.

Hooks see one tensor several times (the output one module gives is the input the next gets,
and a gradient reaches the tensor hooks of both); a step's diff reads a state tensor its
summary then reads again. A `TensorMemo` keeps a value per tensor with the tensor itself
(weakly, so an id reused by a new tensor is not mistaken for it) and its version counter (so
that an in-place change since forgets it). An inference tensor keeps no version counter:
nothing is kept for it.
"""

from __future__ import annotations

import weakref
from typing import Generic, TypeVar

import torch

_V = TypeVar("_V")


def version_of(t: torch.Tensor) -> int | None:
    """`t`'s version counter; None for an inference tensor, which keeps none."""
    try:
        return t._version
    except RuntimeError:
        return None


class TensorMemo(Generic[_V]):
    """A value per tensor, valid while the tensor is the same object, unchanged in place."""

    def __init__(self) -> None:
        self._known: dict[int, tuple[weakref.ref[torch.Tensor], int, _V]] = {}

    def get(self, t: torch.Tensor) -> _V | None:
        """The value kept for `t`, if `t` has not changed since (None otherwise)."""
        known = self._known.get(id(t))
        if known is None or known[0]() is not t:
            return None
        # A kept tensor is no inference tensor: it has a version counter.
        return known[2] if t._version == known[1] else None

    def put(self, t: torch.Tensor, value: _V) -> None:
        """Keep `value` for `t` as it is now (not for an inference tensor)."""
        version = version_of(t)
        if version is not None:
            self._known[id(t)] = (weakref.ref(t), version, value)

    def clear(self) -> None:
        self._known.clear()
