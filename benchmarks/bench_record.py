"""What `Session._record` costs on a model of many small tensors, against the plain step.

    python benchmarks/bench_record.py [--blocks 3300] [--repeats 7] [--device cuda] [--crossover]

The model is `--blocks` blocks of Linear(4, 4) + LayerNorm(4) + ReLU (3300 blocks: 13,201
modules, 13,200 parameter tensors), fed `torch.randn(8, 4)` with loss `out.pow(2).mean()` and
SGD. Every time is the median of `--repeats` runs measured in this process, and each is printed
with its ratio to the plain forward + backward + optimizer step: the machine may be shared, so
compare ratios, not milliseconds. `--crossover` also times the joined path
(`core/stats/segments.py`) against the per-tensor one for sets of k tensors of n elements, to
choose `segments.MIN_TENSORS`, `SUMMARY_MAX_NUMEL` and `DIFF_MAX_NUMEL`. Torch runs on one
thread (`--threads`) whatever
OMP_NUM_THREADS says: on a busy machine, OpenMP workers waiting for a core make every small op
tens of times slower, at random.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from modscope.core.session import Session
from modscope.core.stats import segments
from modscope.core.stats.statediff import StateTracker
from modscope.core.stats.summary import summarize_many


def make_model(blocks: int) -> nn.Module:
    """`blocks` x (Linear(4, 4), LayerNorm(4), ReLU): four small parameter tensors each."""
    return nn.Sequential(
        *[nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.ReLU()) for _ in range(blocks)]
    )


def median_times(
    fns: dict[str, Callable[[], object]], repeats: int, device: str = "cpu"
) -> dict[str, float]:
    """The median wall time of each function in seconds, after one warm-up call each.

    The functions take turns, round after round, so that a load that comes and goes on a
    shared machine weighs on all of them alike. On CUDA each time ends when the GPU is done.
    """

    def wait() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            wait()
            start = time.perf_counter()
            fn()
            wait()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _with_limits(joined: bool, fn: Callable[[], object]) -> object:
    """Call `fn` with the joined path always (`joined`) or never taken."""
    saved = segments.MIN_TENSORS, segments.SUMMARY_MAX_NUMEL, segments.DIFF_MAX_NUMEL
    segments.MIN_TENSORS = 2 if joined else 1 << 62
    segments.SUMMARY_MAX_NUMEL = segments.DIFF_MAX_NUMEL = 1 << 62
    try:
        return fn()
    finally:
        segments.MIN_TENSORS, segments.SUMMARY_MAX_NUMEL, segments.DIFF_MAX_NUMEL = saved


def crossover(repeats: int) -> None:
    """Joined vs per-tensor time of `summarize_many` and `StateTracker.diff` on k tensors of
    n elements; a ratio below 1 favours joining."""
    print("k tensors x n elements: joined / per-tensor time (summaries, diff)")
    cases = [(k, 16) for k in (2, 4, 8, 16, 64)] + [(64, n) for n in (256, 512, 1024, 2048, 4096)]
    for k, n in cases:
        g = torch.Generator().manual_seed(k * n)
        tensors = [torch.randn(n, generator=g) for _ in range(k)]
        state = {str(i): t for i, t in enumerate(tensors)}
        fns: dict[str, Callable[[], object]] = {}
        for joined in (True, False):
            tracker = StateTracker()
            _with_limits(joined, functools.partial(tracker.reset, state))
            summaries = functools.partial(summarize_many, tensors)
            fns[f"summaries {joined}"] = functools.partial(_with_limits, joined, summaries)
            diff = functools.partial(tracker.diff, state)
            fns[f"diff {joined}"] = functools.partial(_with_limits, joined, diff)
        t = median_times(fns, repeats)
        summary_ratio = t["summaries True"] / t["summaries False"]
        diff_ratio = t["diff True"] / t["diff False"]
        print(f"k={k:3d} n={n:6d}: summaries {summary_ratio:5.2f}  diff {diff_ratio:5.2f}")


def main() -> None:
    """Print each time in ms and as a multiple of the plain step."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=3300)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top ops")
    parser.add_argument("--crossover", action="store_true", help="time joined vs per-tensor")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.crossover:
        crossover(args.repeats)
        return

    torch.manual_seed(0)
    model = make_model(args.blocks).to(args.device)
    inputs = torch.randn(8, 4, device=args.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def loss_fn(out: torch.Tensor) -> torch.Tensor:
        return out.pow(2).mean()

    def plain_step() -> None:
        optimizer.zero_grad()
        loss_fn(model(inputs)).backward()
        optimizer.step()

    session = Session.from_objects(model, inputs=inputs, loss_fn=loss_fn, optimizer=optimizer)
    session.run_iteration()  # gradients exist from here on, as in `_record` after a step
    state = model.state_dict(keep_vars=True)
    tensors = [v for v in state.values() if isinstance(v, torch.Tensor)]
    tracker = session._tracker

    timings = median_times(
        {
            "plain forward+backward+step": plain_step,
            "session.run_iteration()": session.run_iteration,
            "session._record()": session._record,
            "StateTracker.diff(state)": functools.partial(tracker.diff, state),
            "summarize_many(state tensors)": functools.partial(summarize_many, tensors),
        },
        args.repeats,
        args.device,
    )
    modules = sum(1 for _ in model.modules())
    params = sum(1 for _ in model.parameters())
    print(
        f"{modules:,} modules, {params:,} parameter tensors, {len(tensors):,} state tensors, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}"
    )
    base = timings["plain forward+backward+step"]
    for name, seconds in timings.items():
        print(f"{name:32s} {seconds * 1e3:9.2f} ms  {seconds / base:6.2f}x step")
    if args.profile:
        with torch.profiler.profile() as prof:
            session._record()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
