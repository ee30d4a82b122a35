"""Time build_inventory on a model of ~13,000 small modules against a bare named_modules walk."""

# Run from the repository root: python -m benchmarks.bench_inventory [--blocks N] [--repeats N]

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from torch import nn

from modscope.core.model.inventory import build_inventory, fold_runs


def many_blocks(n: int) -> nn.Sequential:
    """`n` blocks of Linear(4, 4) + LayerNorm + ReLU, each a Sequential: 4n + 1 modules."""
    return nn.Sequential(
        *[nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.ReLU()) for _ in range(n)]
    )


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """The fastest of `repeats` runs, in seconds: the least disturbed by the rest of the machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--blocks", type=int, default=3300)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    start = time.perf_counter()
    model = many_blocks(args.blocks)
    built = time.perf_counter() - start
    count = sum(1 for _ in model.modules())

    def baseline() -> None:
        list(model.named_modules())
        list(model.named_parameters())

    base = best_of(args.repeats, baseline)
    inv = best_of(args.repeats, lambda: build_inventory(model))
    inventory = build_inventory(model)
    children = [inventory.module(path) for path in inventory.root.children]
    fold = best_of(args.repeats, lambda: fold_runs(children, inventory))
    print(f"model: {count:,} modules, built in {built:.2f} s")
    print(f"named_modules + named_parameters: {base * 1e3:8.1f} ms")
    print(f"build_inventory:                  {inv * 1e3:8.1f} ms  (x{inv / base:.1f})")
    print(f"fold_runs of the root's children: {fold * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
