"""Whole-process time of `modscope run` against the same plain loop, on a 1.08M-parameter MLP.

    python benchmarks/bench_run.py [--steps 50] [--repeat 3]

Prints each command's median wall time and its ratio to the plain loop measured in this run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

SCRIPT = textwrap.dedent(
    """
    import os
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(512, 1024), nn.ReLU(inplace=True), nn.Dropout(0.1),
        nn.Linear(1024, 512), nn.LayerNorm(512), nn.ReLU(),
        nn.Linear(512, 64),
    )
    inputs = torch.randn(64, 512)
    target = torch.randn(64, 64)

    def loss_fn(output):
        return nn.functional.mse_loss(output, target)

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    if __name__ == "__main__":
        for _ in range(int(os.environ["STEPS"])):
            optimizer.zero_grad()
            loss = loss_fn(model(inputs))
            loss.backward()
            optimizer.step()
        print(f"{loss.item():.6f}")
    """
)


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mlp.py")
        with open(path, "w") as f:
            f.write(SCRIPT)
        env = dict(os.environ, STEPS=str(args.steps))
        steps = ["--steps", str(args.steps)]
        run = [sys.executable, "-m", "modscope", "run", path, *steps]
        commands = {
            "plain loop (python mlp.py)": [sys.executable, path],
            "modscope run": run,
            "modscope run --json": [*run, "--json"],
            "modscope run --hooks all --json": [*run, "--hooks", "all", "--json"],
            "python -c 'import torch' (floor)": [sys.executable, "-c", "import torch"],
        }
        times = {name: [] for name in commands}
        for _ in range(args.repeat):
            for name, argv in commands.items():
                times[name].append(timed(argv, env))
    base = statistics.median(times["plain loop (python mlp.py)"])
    print(
        f"{args.steps} iterations of a 1.08M-parameter MLP (Adam, batch 64), median of "
        f"{args.repeat}"
    )
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:36s} {median:7.2f} s   x{median / base:.2f}")


if __name__ == "__main__":
    main()
