"""The cost of collecting per-module statistics (`run --layers`, the app's layers view).

    python benchmarks/bench_layers.py [--steps 20] [--rounds 7] [--device cpu|cuda]

Two models, each trained the same way with and without a `LayerCollector` (a forward hook on every
module noting its output's statistics, and `take` after each iteration: one host transfer per
device): an MLP of Linear + ReLU + Dropout blocks (few modules, large outputs) and a deep stack
of tiny Linear + Tanh pairs (many modules, small outputs: the per-call floor). The variants
alternate round by round, each on its own copy of the model; prints the median time per
iteration and the ratio.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from modscope.core.layers.collector import LayerCollector
from modscope.core.session import Session


def mlp(device: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    blocks = [nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Dropout(0.1)) for _ in range(6)]
    return nn.Sequential(*blocks, nn.Linear(256, 16)).to(device), torch.randn(64, 256).to(device)


def many(device: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    layers = [m for _ in range(500) for m in (nn.Linear(8, 8), nn.Tanh())]
    return nn.Sequential(*layers).to(device), torch.randn(16, 8).to(device)


def variant(
    base: nn.Module, inputs: torch.Tensor, *, watched: bool, noop: bool = False
) -> Callable[[], None]:
    """One iteration of a session on a copy of `base`, with a `LayerCollector` when `watched`, or
    with a forward hook that does nothing on every module when `noop` (the floor of any
    per-module hook)."""
    model = copy.deepcopy(base)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    s = Session.from_objects(
        model, inputs=inputs, loss_fn=lambda o: o.square().mean(), optimizer=optimizer
    )
    watch = LayerCollector(s.model)
    if watched:
        watch.attach()
    if noop:
        for m in model.modules():
            m.register_forward_hook(lambda *_: None)

    def step() -> None:
        record = s.run_iteration().record
        assert record is not None
        if watched:
            watch.take(record)

    return step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20, help="iterations per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    for name, build in (("MLP", mlp), ("many tiny modules", many)):
        base, inputs = build(args.device)

        variants = {
            "session": variant(base, inputs, watched=False),
            "session + no-op hooks": variant(base, inputs, watched=False, noop=True),
            "session + layers": variant(base, inputs, watched=True),
        }
        for step in variants.values():
            for _ in range(3):
                step()
        times: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(args.rounds):
            for v, step in variants.items():
                sync()
                start = time.perf_counter()
                for _ in range(args.steps):
                    step()
                sync()
                times[v].append((time.perf_counter() - start) / args.steps)
        modules = len(list(base.modules()))
        params = sum(p.numel() for p in base.parameters())
        base_ms = statistics.median(times["session"])
        print(f"{args.device}: {name}, {modules} modules, {params:,} parameters")
        for v, values in times.items():
            median = statistics.median(values)
            print(f"  {v:22s} {median * 1e3:8.3f} ms/iteration   x{median / base_ms:.2f}")


if __name__ == "__main__":
    main()
