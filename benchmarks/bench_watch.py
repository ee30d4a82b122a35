"""What `modscope.watch()` adds to a step of the user's own loop, beside what `modscope run` adds.

`python benchmarks/bench_watch.py` measures, in one process on one model, alternating rounds of
three kinds: the plain loop (zero_grad, forward, loss, backward, optimizer step), the same
iterations run by a session as `modscope run` runs them (its `PlainRun`: the record, the
doctor, the rank check), and the plain loop under `modscope.watch(model, optimizer)` with its
default options. Each round's first step is left out (the watch's diff copy is taken then, as
`run` takes it at its first iteration), so the figures are steady-state steps. It prints the
medians of CPU time per step and what `run` and `watch` add to a plain step, as ratios: the
machine may be shared, compare ratios, not milliseconds. Torch runs on one thread (`--threads`).

Workloads (`workloads.py`): the MLP of 1.36 M parameters (Adam) and N blocks of Linear(140, 140)
+ LayerNorm + ReLU (`--blocks`, default 3,300: 13,201 modules, 66.1 M parameters, SGD).
"""

from __future__ import annotations

import argparse
import os
import runpy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import workloads  # noqa: E402  (a sibling file: benchmarks/ is no package)


def measure(script_text: str, *, steps: int, rounds: int) -> dict[str, float]:
    """Median CPU seconds per steady-state step of the plain loop, `run`'s and `watch`'s."""
    import modscope
    from modscope.core.session import Session
    from modscope.report.run_command import PlainRun

    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(script_text)
        path = f.name
    names = runpy.run_path(path, run_name="bench")
    os.unlink(path)
    model, optimizer = names["model"], names["optimizer"]
    inputs, loss_fn = names["inputs"], names["loss_fn"]
    clock = time.process_time

    def plain_step() -> None:
        optimizer.zero_grad()
        loss_fn(model(inputs)).backward()
        optimizer.step()

    session = Session.from_objects(model, inputs=inputs, loss_fn=loss_fn, optimizer=optimizer)
    run = PlainRun(session)

    def timed(step: Callable[[], object]) -> list[float]:
        step()  # the round's first step: copies and caches, left out
        times = []
        for _ in range(steps):
            start = clock()
            step()
            times.append(clock() - start)
        return times

    found: dict[str, list[float]] = {"plain": [], "run": [], "watch": []}
    for _ in range(rounds):
        found["plain"] += timed(plain_step)
        found["run"] += timed(run.step)
        with modscope.watch(model, optimizer):
            found["watch"] += timed(plain_step)
    run.close()
    session.close()
    return {kind: statistics.median(times) for kind, times in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=3300)
    parser.add_argument("--steps", type=int, default=3, help="timed steps a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="330 blocks, 2 rounds")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    blocks = 330 if args.quick else args.blocks
    rounds = 2 if args.quick else args.rounds
    rows = [
        ("MLP", workloads.MLP, max(args.steps, 10)),
        (f"{blocks} blocks", workloads.many(blocks, 140), args.steps),
    ]
    print(f"load average {os.getloadavg()[0]:.2f}; {args.threads} thread(s); medians of CPU time")
    print(
        f"{'workload':<14} {'plain s':>9} {'run +':>9} {'watch +':>9} {'run x':>7} {'watch x':>8}"
    )
    for label, text, steps in rows:
        m = measure(text, steps=steps, rounds=rounds)
        plain = m["plain"]
        print(
            f"{label:<14} {plain:>9.4f} {m['run'] - plain:>9.4f} {m['watch'] - plain:>9.4f} "
            f"{m['run'] / plain:>6.2f}x {m['watch'] / plain:>7.2f}x"
        )


if __name__ == "__main__":
    main()
