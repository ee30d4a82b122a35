"""Formatting snapshot values for people: numbers, shapes, sizes and one-line tensor summaries."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from modscope.core.types import TensorSummary

SPARK_CHARS = "▁▂▃▄▅▆▇█"

INLINE_VALUES = 8
"""A summary with at most this many values shows them instead of its statistics."""


def format_number(x: float | None) -> str:
    """A float with 4 decimals (`-0.3900`), or 5 significant digits outside [1e-3, 1e5).

    None is "?", NaN "nan", infinities "inf" and "-inf"; zero is "0.0000" whatever its sign.
    """
    if x is None:
        return "?"
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0.0000"
    if 1e-3 <= abs(x) < 1e5:
        return f"{x:.4f}"
    return f"{x:.4e}"


def format_count(n: int) -> str:
    """An integer with thousands separators: `1,234,567`."""
    return f"{n:,}"


def plural(n: int, word: str) -> str:
    """A count and a noun that agrees with it: `1 param`, `2 params`, `1,024 params`."""
    return f"{format_count(n)} {word}{'' if n == 1 else 's'}"


def format_bytes(n: int) -> str:
    """A size in binary units: `512 B`, `1.5 KiB`, `4.0 MiB`."""
    if abs(n) < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if abs(size) < 1024 or unit == "TiB":
            break
    return f"{size:.1f} {unit}"


def format_shape(shape: Sequence[int]) -> str:
    """A shape as a list: `[3, 196]`; `[]` for a 0-d tensor."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


def format_value(v: Any) -> str:
    """One tensor element: floats as `format_number`, complex as `1.0000+2.0000j`."""
    if isinstance(v, (bool, int)):
        return str(v)
    if isinstance(v, complex):
        imag = format_number(v.imag)
        sign = "" if imag.startswith("-") else "+"
        return f"{format_number(v.real)}{sign}{imag}j"
    if isinstance(v, float):
        return format_number(v)
    return str(v)


def summary_line(s: TensorSummary, *, autograd: bool = False) -> str:
    """One line a person reads at a glance, in the style of lovely-tensors.

    `tensor[3, 196] n=588 x∈[-2.1000, 2.6000] μ=-0.3900 σ=1.0700`; small tensors show their
    values (`tensor 1.1034`, `tensor[2] [1.0000, 0.0080]`). dtype and device appear only when
    not float32 and cpu; `NaN!×3`, `Inf!×1`, `all zeros` and `empty` are loud on purpose.
    With `autograd`, `grad` (requires_grad) and the grad_fn name are shown too.
    """
    words = ["tensor" if not s.shape else "tensor" + format_shape(s.shape)]
    if len(s.shape) > 1 and s.numel > 0:
        words.append(f"n={format_count(s.numel)}")
    if s.layout != "strided":
        words.append(s.layout)
    if s.dtype != "float32":
        words.append(s.dtype)
    if s.device != "cpu":
        words.append(s.device)
    if autograd and (s.requires_grad or s.grad_fn):
        words.append("grad" if s.grad_fn is None else f"grad {s.grad_fn}")
    if s.numel == 0:
        words.append("empty")
    elif s.values is not None and len(s.values) <= INLINE_VALUES:
        shown = [format_value(v) for v in s.values]
        words.append(shown[0] if not s.shape else "[" + ", ".join(shown) + "]")
    elif s.all_zero:
        words.append("all zeros")
    elif s.min is not None:
        x = "|x|" if s.dtype.startswith("complex") else "x"
        words.append(f"{x}∈[{format_number(s.min)}, {format_number(s.max)}]")
        words.append(f"μ={format_number(s.mean)}")
        if s.std is not None:
            words.append(f"σ={format_number(s.std)}")
    elif not (s.nan or s.inf or s.device == "meta"):
        words.append("no statistics")
    if s.nan:
        words.append(f"NaN!×{format_count(s.nan)}")
    if s.inf:
        words.append(f"Inf!×{format_count(s.inf)}")
    return " ".join(words)


def sparkline(values: Sequence[float | None], width: int) -> str:
    """The last `width` values as bars `▁▂▃▄▅▆▇█`, scaled from their min to their max.

    None and NaN are blanks; +inf is a full bar and -inf the lowest; when all finite values
    are equal every bar is at mid height.
    """
    if width <= 0:
        return ""
    tail = list(values)[-width:]
    finite = [v for v in tail if v is not None and math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)
    top = len(SPARK_CHARS) - 1
    out = []
    for v in tail:
        if v is None or math.isnan(v):
            out.append(" ")
        elif math.isinf(v):
            out.append(SPARK_CHARS[top if v > 0 else 0])
        elif hi == lo:
            out.append(SPARK_CHARS[top // 2])
        else:
            out.append(SPARK_CHARS[round((v - lo) / (hi - lo) * top)])
    return "".join(out)
