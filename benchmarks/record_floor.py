"""What `run` adds to a steady-state step, beside the least an exact step record can cost.

    OMP_NUM_THREADS=1 python benchmarks/record_floor.py SCRIPT [--rounds 5]

SCRIPT is one of `workloads`' scripts (it defines `model`, `inputs`, `loss_fn`, `optimizer`).
One process, one model, alternating rounds of one iteration each, CPU time
(`time.process_time`: steadier than the wall clock on a shared machine; the work is on one
thread), medians:

- plain: the script's own iteration (zero_grad, forward, loss, backward, step).
- run: one step of what `modscope run --json` does for each step (`PlainRun.step`: the
  session's iteration, its record, the doctor's after-step checks; then the JSON line, written
  to /dev/null), after a warm-up step that took the diff's baseline.
- floor: after a plain iteration, the least an exact record of its state and gradients reads
  and writes: one read-only pass over every state tensor and every gradient (`sum`: the
  statistics of a summary need every element once), and for every floating state tensor one
  pass that reads its previous copy and its value and writes the copy in place
  (`torch.sub(value, copy, out=copy)`: the traffic of a fused kernel that would yield the
  diff's statistics while it refreshes the copy). No Python per tensor beyond the calls, no
  summaries built, nothing written.

It prints the medians and, for `run_all.py`, `figure per_step RUN/PLAIN` (the per-step ratio)
and `figure over_floor ADDED/FLOOR` (what `run` adds to a step over what the floor costs).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import runpy
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch


def floor_pass(tensors: list[torch.Tensor], previous: list[tuple[torch.Tensor, torch.Tensor]]):
    """One read of every tensor in `tensors`, and one read-read-write pass over each pair of
    (value, previous copy) in `previous`, the copy written in place."""
    with torch.no_grad():
        for t in tensors:
            t.sum()
        for value, copy in previous:
            torch.sub(value, copy, out=copy)


def measure(names: dict[str, Any], rounds: int) -> dict[str, float]:
    """The medians, in CPU seconds, of a plain iteration, a `run` step and the floor pass."""
    from modscope.core.session import Session, SessionOptions
    from modscope.report.run_command import PlainRun
    from modscope.report.run_reports import JsonReport

    model, optimizer = names["model"], names["optimizer"]
    inputs, loss_fn = names["inputs"], names["loss_fn"]
    # As `run --json` has it: no history of records (each is written, then dropped).
    session = Session.from_objects(
        model,
        inputs=inputs,
        loss_fn=loss_fn,
        optimizer=optimizer,
        options=SessionOptions(history=0),
    )
    run = PlainRun(session)
    report = JsonReport()
    clock = time.process_time
    devnull = open(os.devnull, "w")  # noqa: SIM115  (held for the whole measurement)

    def plain() -> float:
        start = clock()
        optimizer.zero_grad()
        loss_fn(model(inputs)).backward()
        optimizer.step()
        return clock() - start

    def run_step() -> float:
        with contextlib.redirect_stdout(devnull):
            start = clock()
            it = run.step()
            assert it.record is not None, it.error
            report.step(it.record)
            for finding in it.findings:
                report.finding(finding)
            return clock() - start

    state = [v.detach() for v in model.state_dict(keep_vars=True).values()]
    floating = [v for v in state if v.is_floating_point()]
    copies = [(v, v.clone()) for v in floating]

    def floor() -> float:
        plain()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        start = clock()
        floor_pass(state + grads, copies)
        return clock() - start

    timed: dict[str, Callable[[], float]] = {"plain": plain, "run": run_step, "floor": floor}
    for fn in timed.values():  # warm-up: first calls, the diff's baseline copy
        fn()
    times: dict[str, list[float]] = {name: [] for name in timed}
    for _ in range(rounds):
        for name, fn in timed.items():
            times[name].append(fn())
        print(
            "round: " + ", ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items()),
            file=sys.stderr,
        )
    run.close()
    session.close()
    devnull.close()
    return {name: statistics.median(t) for name, t in times.items()}


def report_figures(medians: dict[str, float]) -> None:
    plain, run, floor = medians["plain"], medians["run"], medians["floor"]
    print(f"plain {plain:.4f} s, run {run:.4f} s, floor {floor:.4f} s (CPU, medians)")
    print(f"figure per_step {run / plain:.6f}")
    print(f"figure added {run - plain:.6f}")
    print(f"figure floor {floor:.6f}")
    print(f"figure over_floor {(run - plain) / max(floor, 1e-9):.6f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("script")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    names = runpy.run_path(args.script, run_name="bench")
    report_figures(measure(names, args.rounds))


if __name__ == "__main__":
    main()
