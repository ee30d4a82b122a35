"""Summaries of many host tensors of one shape at once: rows of a stacked buffer, reduced along
their length.

A model of thousands of mid-sized layers (too large for `segments`' joined path, which works in
float64 per element) would spend most of each step's summaries on four reductions and four host
reads per tensor, each a call into torch whose overhead is as large as its work. Stacked in
buffers of at most `STACK_MAX_TOTAL` elements, tensors of one numel and dtype take four
row-wise reductions per buffer instead. Rows with a non-finite element, or whose variance needs
the second pass `host_stats` makes, are left to the per-tensor path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from modscope.core.stats import segments
from modscope.core.stats.tensor_stats import Stats

STACK_MAX_TOTAL = 2**20
"""Elements in one stacked buffer (4 MB of float32): the copy stays small beside the model."""

MIN_STACKED = 4
"""Stack only where a numel and dtype has at least this many tensors."""

_STACKED_DTYPES = (torch.float32, torch.float64)


def stackable(t: torch.Tensor) -> bool:
    """A plain contiguous float32/float64 host tensor, larger than the joined path takes."""
    # Hooks ask this of every tensor they see: `is_cpu` is much cheaper than `device.type`.
    return (
        type(t) in (torch.Tensor, torch.nn.Parameter)
        and t.is_cpu
        and t.dtype in _STACKED_DTYPES
        and t.layout == torch.strided
        and not t.is_nested
        and segments.SUMMARY_MAX_NUMEL < t.numel() <= STACK_MAX_TOTAL // MIN_STACKED
        and t.is_contiguous()
    )


def stacked_stats(tensors: Sequence[torch.Tensor]) -> list[Stats | None]:
    """`host_stats` of each tensor (all of one numel and dtype): None where a tensor has a
    non-finite element, for the caller to summarise alone."""
    numel = tensors[0].numel()
    per_buffer = max(STACK_MAX_TOTAL // numel, 1)
    out: list[Stats | None] = []
    with torch.no_grad():
        for start in range(0, len(tensors), per_buffer):
            # One call into C++ rather than a Python reshape per tensor (a hook-heavy phase
            # stacks tens of thousands); tensors of one numel may differ in shape.
            rows = segments.flatten(tensors[start : start + per_buffer]).view(-1, numel)
            # amin and amax along rows run vectorised where aminmax(dim=) and
            # count_nonzero(dim=) do not (far slower on the CPU). Nonzeros are
            # counted as bytes of a bool view summed along rows in int32 (exact, and faster
            # than a smallest magnitude per row and a `count_nonzero` per row with a zero:
            # gradients behind a ReLU have zeros, thousands of rows a step).
            lo, hi = rows.amin(dim=1), rows.amax(dim=1)
            total = rows.sum(dim=1)
            norm = torch.linalg.vector_norm(rows, dim=1)
            nonzero = rows.bool().view(torch.uint8).sum(dim=1, dtype=torch.int32).tolist()
            columns = torch.stack([lo, hi, total, norm], dim=1).tolist()
            second: list[tuple[int, Stats]] = []  # rows whose variance needs a pass about the mean
            for (lo_, hi_, total_, norm_), count in zip(columns, nonzero, strict=True):
                stats = _row_stats(lo_, hi_, total_, norm_, nonzero=count, n=numel)
                if stats is not None and stats.m2 < 1e-2 * norm_ * norm_:
                    second.append((len(out), stats))
                out.append(stats)
            if second:
                _second_pass(rows, out, second, start)
    return out


def _row_stats(
    lo: float, hi: float, total: float, norm: float, nonzero: int, n: int
) -> Stats | None:
    """`host_stats`' arithmetic on one row's reductions (None: a non-finite element)."""
    if not all(map(math.isfinite, (total, lo, hi, norm))):
        return None
    mean = total / n
    return Stats(lo, hi, mean, norm * norm - n * mean * mean, norm, nonzero, finite=n, nan=0)


def _second_pass(
    rows: torch.Tensor, out: list[Stats | None], second: list[tuple[int, Stats]], start: int
) -> None:
    """Rows nearly all mean, whose variance from the norm and the mean lost its digits: the
    norm about the mean, as `host_stats` takes it, for all of them at once (gradients behind
    a normalisation are often such rows, thousands a step)."""
    picked = rows[[i - start for i, _ in second]]
    means = torch.tensor([stats.mean for _, stats in second], dtype=rows.dtype)
    about = torch.linalg.vector_norm(picked - means[:, None], dim=1).tolist()
    for (i, stats), norm in zip(second, about, strict=True):
        out[i] = stats._replace(m2=norm * norm)
