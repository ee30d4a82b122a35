"""Time-to-first-paint of the app's module tree on ~13,000 modules, against building the Inventory.

Run from the repository root: python -m benchmarks.bench_tui_tree [--blocks N] [--repeats N]

The model is nn.Sequential of N blocks (Linear + LayerNorm + ReLU, 4 modules each). "First
paint" is measured from the moment the model script finished loading (the model is built) to
the first screen refresh after the tree was filled: it includes the inventory the worker
builds, the fold runs, handing the snapshot over and building the visible nodes. The baseline
is `build_inventory` on the same model in the same process; the ratio is printed. It also checks
that the UI stays responsive: the largest gap between two UI ticks while the model loads.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time

from torch import nn

from modscope.core.model.inventory import build_inventory

SCRIPT = """
import torch
from torch import nn

model = nn.Sequential(
    *[nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.ReLU()) for _ in range({blocks})]
)
inputs = torch.randn(8, 4)
"""


def many_blocks(n: int) -> nn.Sequential:
    return nn.Sequential(
        *[nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.ReLU()) for _ in range(n)]
    )


async def first_paint(script: str) -> tuple[float, float, int]:
    """Seconds from model built to tree painted, the longest UI stall, and the nodes created."""
    from modscope.launch import make_app
    from modscope.tui.module_tree import ModuleTree

    app = make_app(script, animations=False)
    longest = 0.0
    async with app.run_test(size=(120, 40)) as pilot:
        last = time.perf_counter()
        while "first_paint" not in app.timings:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            longest = max(longest, now - last - 0.01)
            last = now
        await app.wait_idle(timeout=120)
        await pilot.pause()
        nodes = app.query_one(ModuleTree).node_count
    app.worker.join(10)
    return app.timings["first_paint"], longest, nodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--blocks", type=int, default=3300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="sys.setswitchinterval for the run (the GIL hand-over period)",
    )
    args = parser.parse_args()
    if args.switch_interval:
        import sys

        sys.setswitchinterval(args.switch_interval)

    model = many_blocks(args.blocks)
    modules = sum(1 for _ in model.modules())
    inventory_times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        build_inventory(model)
        inventory_times.append(time.perf_counter() - start)
    baseline = min(inventory_times)

    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "many_blocks.py")
        with open(script, "w") as f:
            f.write(SCRIPT.format(blocks=args.blocks))
        runs = [asyncio.run(first_paint(script)) for _ in range(args.repeats)]
    paint, _, nodes = min(runs)
    print(f"model: {modules:,} modules")
    print(f"build_inventory (baseline):  {baseline * 1e3:8.1f} ms")
    print(
        f"tree first paint:            {paint * 1e3:8.1f} ms  (x{paint / baseline:.2f} of the "
        "baseline)"
    )
    print(f"longest UI stall while loading: {max(r[1] for r in runs) * 1e3:.1f} ms")
    print(f"tree nodes created: {nodes:,}")


if __name__ == "__main__":
    main()
