"""The cost of `--break` conditions: a Session armed with `nan`, unarmed, and the plain loop.

    python benchmarks/bench_breaks.py [--steps 20] [--rounds 7] [--device cpu|cuda] [--depth 6]

One process, one small MLP (Linear, in-place ReLU, Dropout blocks; Adam, batch 64): the same
iterations under each variant, the variants alternating round by round, each on its own copy of
the model. Prints the median time per iteration and its ratio to the plain loop and to the
unarmed session (what arming costs: `nan` attaches a forward-pre and a forward hook to every
module and tensor hooks to each call's outputs, inputs and parameters).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from modscope.core.session import Session

NEVER = ["loss>1e30", "grad-norm>1e30", "blocks.0:output-absmax>1e30"]
"""Conditions that never hold (so that nothing stops the run), beside `nan`."""


def build(depth: int, width: int, device: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    blocks = [
        nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True), nn.Dropout(0.1))
        for _ in range(depth)
    ]
    model = nn.Sequential()
    model.add_module("blocks", nn.Sequential(*blocks))
    model.add_module("head", nn.Linear(width, 16))
    inputs = torch.randn(64, width, device=device)
    target = torch.randn(64, 16, device=device)
    return model.to(device), inputs, target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20, help="iterations per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--depth", type=int, default=6, help="blocks of Linear+ReLU+Dropout")
    parser.add_argument("--width", type=int, default=256)
    args = parser.parse_args()
    base, inputs, target = build(args.depth, args.width, args.device)

    def loss_fn(output: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(output, target)

    def plain() -> Callable[[], None]:
        model = copy.deepcopy(base)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step() -> None:
            optimizer.zero_grad()
            loss_fn(model(inputs)).backward()
            optimizer.step()

        return step

    def session(conditions: list[str]) -> Callable[[], None]:
        model = copy.deepcopy(base)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        s = Session.from_objects(model, inputs=inputs, loss_fn=loss_fn, optimizer=optimizer)
        s.arm(conditions)

        def step() -> None:
            result = s.run_iteration()
            assert result.record is not None, result

        return step

    variants = {
        "plain loop": plain(),
        "session, unarmed": session([]),
        "session, --break nan": session(["nan"]),
        "session, nan + 3 more": session(["nan", *NEVER]),
    }
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    for step in variants.values():  # warm up: allocations, kernels, lazy imports
        for _ in range(3):
            step()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, step in variants.items():
            sync()
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            sync()
            times[name].append((time.perf_counter() - start) / args.steps)
    params = sum(p.numel() for p in base.parameters())
    modules = len(list(base.modules()))
    print(
        f"{args.device}: MLP of {params:,} parameters, {modules} modules (depth {args.depth}, "
        f"width {args.width}, batch 64, Adam); median of {args.rounds} rounds of "
        f"{args.steps} iterations"
    )
    plain_ms = statistics.median(times["plain loop"])
    unarmed_ms = statistics.median(times["session, unarmed"])
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"  {name:24s} {median * 1e3:8.3f} ms/iteration   x{median / plain_ms:.2f} plain"
            f"   x{median / unarmed_ms:.2f} unarmed"
        )


if __name__ == "__main__":
    main()
