"""A tensor as frozen data (no torch here): its summary and where it lives in the tree."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def finite_or_none(value: float | None) -> float | None:
    """A float for strict JSON: NaN and infinities become None."""
    if value is None or not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True, slots=True)
class TensorSummary:
    """The numbers a person reads about one tensor, captured at one moment.

    Slotted: a step's record holds one for every key and gradient (26,400 on a model of
    13,000 modules), and with slots each takes a third of the memory.

    Statistics are over the real values (magnitudes for complex tensors) and skip NaN and Inf;
    they are None when there is nothing to compute them over (empty, meta, all non-finite).
    """

    shape: tuple[int, ...]
    dtype: str
    device: str
    numel: int
    norm: float | None = None
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    nan: int = 0
    inf: int = 0
    zeros: int = 0
    values: tuple[Any, ...] | None = None
    layout: str = "strided"
    requires_grad: bool = False
    grad_fn: str | None = None
    note: str | None = None

    @property
    def all_zero(self) -> bool:
        return self.numel > 0 and self.zeros == self.numel

    def to_json(self) -> dict[str, Any]:
        """The tensor summary object of docs/design.md section 2 (strict JSON: non-finite floats
        as None)."""
        out: dict[str, Any] = {
            "shape": list(self.shape),
            "dtype": self.dtype,
            "device": self.device,
            "numel": self.numel,
            "norm": finite_or_none(self.norm),
            "min": finite_or_none(self.min),
            "max": finite_or_none(self.max),
            "mean": finite_or_none(self.mean),
            "std": finite_or_none(self.std),
            "nan": self.nan,
            "inf": self.inf,
        }
        if self.values is not None:
            out["values"] = [_json_value(v) for v in self.values]
        if self.layout != "strided":
            out["layout"] = self.layout
        if self.grad_fn is not None:
            out["grad_fn"] = self.grad_fn
        if self.note is not None:
            out["note"] = self.note
        return out


def _json_value(v: Any) -> Any:
    if isinstance(v, float):
        return finite_or_none(v)
    if isinstance(v, complex):
        return [finite_or_none(v.real), finite_or_none(v.imag)]
    return v


@dataclass(frozen=True)
class TensorInfo:
    """A parameter or buffer as registered on its module (no statistics)."""

    name: str
    path: str
    shape: tuple[int, ...]
    dtype: str
    device: str
    numel: int
    nbytes: int
    requires_grad: bool
    is_parameter: bool
    persistent: bool = True
    shared_with: tuple[str, ...] = ()
    has_grad_fn: bool = False
    note: str | None = None

    @property
    def frozen(self) -> bool:
        return self.is_parameter and not self.requires_grad


SummaryList = tuple["TensorSummary | None", ...]
