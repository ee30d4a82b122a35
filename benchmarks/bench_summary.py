"""Times summarize_many over a ~1M-parameter model's 200 tensors against a plain `t.sum()` loop."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from modscope.core.stats.summary import capture_many, resolve, summarize_many


def make_tensors(device: str) -> list[torch.Tensor]:
    """The 200 parameters of 50 Linear + LayerNorm blocks of width 140 (about 1.0M values)."""
    torch.manual_seed(0)
    blocks = [nn.Sequential(nn.Linear(140, 140), nn.LayerNorm(140)) for _ in range(50)]
    model = nn.Sequential(*blocks).to(device)
    return [p.detach() for p in model.parameters()]


def best_time(fn: Callable[[], object], device: str, repeats: int) -> float:
    """The median wall time of `fn` in seconds, the device's queue drained each time."""
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    """Print both times and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top ops")
    args = parser.parse_args()
    tensors = make_tensors(args.device)
    numel = sum(t.numel() for t in tensors)

    def baseline() -> list[float]:
        # .tolist() of the stacked sums: the same single transfer summarize_many makes.
        return torch.stack([t.sum() for t in tensors]).tolist()

    def summaries() -> object:
        return summarize_many(tensors)

    for fn in (baseline, summaries):  # warm-up: allocator, kernels, lazy imports
        fn()
    base = best_time(baseline, args.device, args.repeats)
    ours = best_time(summaries, args.device, args.repeats)
    print(f"device {args.device}: {len(tensors)} tensors, {numel:,} values")
    print(f"baseline [t.sum() for t in tensors]: {base * 1e3:8.3f} ms")
    print(f"summarize_many(tensors):             {ours * 1e3:8.3f} ms")
    print(f"ratio: {ours / base:.1f}x")
    pending = capture_many(tensors)
    captured = best_time(lambda: capture_many(tensors), args.device, args.repeats)
    resolved = best_time(lambda: resolve(pending), args.device, args.repeats)
    print(f"of which capture_many {captured * 1e3:.3f} ms, resolve {resolved * 1e3:.3f} ms")
    if args.profile:
        with torch.profiler.profile() as prof:
            summaries()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
