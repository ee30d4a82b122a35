"""What observing every module costs at the least, beside what modscope's observe hooks cost.

    OMP_NUM_THREADS=1 python benchmarks/hooks_floor.py [--blocks 3300] [--rounds 5]

On the many-modules workload (`workloads.many`), one process, alternating rounds of one
iteration each, CPU time (`time.process_time`: steadier than the wall clock on a shared
machine), medians of what each adds to a plain iteration:

- no-op: `workloads`' no-op hooks, the `run_all.py` baseline: a forward-pre hook, and a forward
  hook that puts a tensor hook on each input and output; they keep nothing.
- copy floor: one forward-pre and one forward hook per module that do the least an exact
  observer must: copy each output when it is seen (a later in-place op may change it), put one
  tensor hook on it whose gradient is copied too, and summarise the copies after the iteration
  (`stacked_stats`, the cheapest summaries modscope has). No events, no memo, no facts.
- modscope: a `Session`'s iteration with `--hooks all` against the same session's without.

The ratios to the no-op cost are printed: the copy floor is what any observer that keeps exact
values pays, whatever its bookkeeping.
"""

from __future__ import annotations

import argparse
import os
import runpy
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads  # a sibling file: benchmarks/ is no package


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=3300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "many.py")
        with open(script, "w") as f:
            f.write(workloads.many(args.blocks, 140))
        names = runpy.run_path(script, run_name="bench")
    measure(names, args.rounds)


def measure(names: dict, rounds: int) -> None:
    from modscope.core.session import Session
    from modscope.core.stats.stacked import stacked_stats
    from modscope.report.run_command import attach_specs, parse_specs

    model, optimizer = names["model"], names["optimizer"]
    inputs, loss_fn = names["inputs"], names["loss_fn"]
    session = Session.from_objects(model, inputs=inputs, loss_fn=loss_fn, optimizer=optimizer)
    clock = time.process_time

    def plain() -> float:
        start = clock()
        optimizer.zero_grad()
        loss_fn(model(inputs)).backward()
        optimizer.step()
        return clock() - start

    def with_hooks(register) -> float:
        handles = [h for m in model.modules() for h in register(m)]
        try:
            return plain()
        finally:
            for h in handles:
                h.remove()

    def noop_round() -> float:
        with workloads.noop_hooks_on(model, names["_noop_hooks"]):
            return plain()

    def floor_round() -> float:
        copies: list[torch.Tensor] = []
        transient = []

        def on_grad(grad: torch.Tensor) -> None:
            copies.append(grad.clone())

        def pre(module, args, kwargs) -> None:
            return None

        def post(module, args, kwargs, output) -> None:
            if isinstance(output, torch.Tensor):
                copies.append(output.detach().clone())
                if output.requires_grad:
                    transient.append(output.register_hook(on_grad))

        def register(m):
            return [
                m.register_forward_pre_hook(pre, with_kwargs=True),
                m.register_forward_hook(post, with_kwargs=True),
            ]

        took = with_hooks(register)  # the iteration; then what is done after it
        after = clock()
        for h in transient:
            h.remove()
        by_shape: dict[tuple[int, torch.dtype], list[torch.Tensor]] = {}
        for c in copies:
            by_shape.setdefault((c.numel(), c.dtype), []).append(c)
        for same in by_shape.values():
            stacked_stats(same)
        return took + clock() - after

    def session_round(hooks: bool) -> float:
        if hooks:
            attach_specs(session, parse_specs([], True))
        start = clock()
        session.run_iteration()
        took = clock() - start
        session.hooks.detach_all()
        return took

    plain(), noop_round(), floor_round(), session_round(False), session_round(True)
    added: dict[str, list[float]] = {"no-op": [], "copy floor": [], "modscope": []}
    for _ in range(rounds):
        base = plain()
        added["no-op"].append(noop_round() - base)
        added["copy floor"].append(floor_round() - base)
        bare = session_round(False)
        added["modscope"].append(session_round(True) - bare)
    noop_cost = statistics.median(added["no-op"])
    modules = sum(1 for _ in model.modules())
    print(f"{modules} modules, medians of {rounds} rounds, CPU seconds added to one iteration")
    for name, values in added.items():
        cost = statistics.median(values)
        print(f"  {name:10s} {cost:7.3f} s  {cost / noop_cost:5.2f}x the no-op hooks'")
    session.close()


if __name__ == "__main__":
    main()
