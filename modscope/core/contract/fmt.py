"""Formatting snapshot values for people: numbers, shapes, sizes and one-line tensor summaries."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from typing import Any

from modscope.core.contract.tensors import TensorSummary

SPARK_CHARS = "▁▂▃▄▅▆▇█"

INLINE_VALUES = 8
"""A summary with at most this many values shows them instead of its statistics."""

ELLIPSIS = "…"

_HIDDEN_CATEGORIES = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs"))
"""Controls, format characters (bidi overrides, zero-width), line/paragraph separators and lone
surrogates: each could move the cursor, clear the screen, split a row or reorder what follows."""

_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    """`ch` as the escape Python would write for it: `\\n`, `\\x1b`, `\\u202e`, `\\U000e0001`."""
    short = _SHORT_ESCAPES.get(ch)
    if short is not None:
        return short
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _cells(ch: str) -> int:
    """Terminal cells one printable character takes: 2 for wide (CJK, most emoji), 0 for a
    combining mark, else 1. An approximation of rich's `cell_len`, which core may not import."""
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def printable(text: str, *, limit: int | None = None) -> str:
    """`text` (a name, repr, message or printed line from user code) as one printable line.

    Every control character (C0 with ESC, `\\n`, `\\r`, `\\t`; DEL; C1), format character (bidi
    overrides and isolates, zero-width), line or paragraph separator and lone surrogate becomes the
    visible escape Python writes for it (`\\x1b`, `\\n`, `\\u202e`), so nothing reaches a
    terminal as a command and nothing splits a row. Printable Unicode (CJK, emoji, combining
    marks) is kept as is; a backslash is not doubled. With `limit` (>= 1), a result wider than
    `limit` terminal cells is cut to at most `limit` cells, the last one "…"; an escape is never
    cut in half.
    """
    if text.isprintable() and (limit is None or (len(text) <= limit and text.isascii())):
        return text
    pieces = [_escape(ch) if unicodedata.category(ch) in _HIDDEN_CATEGORIES else ch for ch in text]
    if limit is None:
        return "".join(pieces)
    widths = [len(p) if len(p) > 1 else _cells(p) for p in pieces]
    if sum(widths) <= limit:
        return "".join(pieces)
    budget = max(limit, 1) - 1
    kept: list[str] = []
    for piece, width in zip(pieces, widths, strict=True):
        if width > budget:
            break
        kept.append(piece)
        budget -= width
    return "".join(kept) + ELLIPSIS


def printable_lines(text: str) -> str:
    """`text` kept on its lines (split at `\\n` only), each made `printable`: for messages,
    tracebacks and reprs shown where several lines fit. A `\\r\\n` ends a line too."""
    if text.isprintable():
        return text
    return "\n".join(printable(line.removesuffix("\r")) for line in text.split("\n"))


def cell_width(text: str) -> int:
    """Terminal cells `text` takes, as `printable` counts them for `limit` (printable text)."""
    return sum(_cells(ch) for ch in text)


def wrap_path(path: str, width: int) -> str:
    """A dotted path (`encoder.layers.0.weight`) on lines of at most `width` characters,
    broken after a dot where it can be (inside a part longer than a line, anywhere): a key that
    must take two lines keeps its parts whole instead of ending in `wei` + `ght`."""
    parts = path.split(".")
    lines: list[str] = []
    line = ""
    for piece in [p + "." for p in parts[:-1]] + parts[-1:]:
        if line and len(line + piece) > width:
            lines.append(line)
            line = ""
        line += piece
        while len(line) > width > 0:
            lines.append(line[:width])
            line = line[width:]
    lines.append(line)
    return "\n".join(lines)


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
        words.append("grad" if s.grad_fn is None else f"grad {printable(s.grad_fn)}")
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
