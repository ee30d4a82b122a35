"""The cost of rewind checkpoints: a Session keeping them (the default) against one without.

    python benchmarks/bench_rewind.py [--steps 50] [--rounds 7] [--device cpu|cuda] [--width 256]

One process, one small MLP (Linear, ReLU, Dropout blocks; Adam, a shuffling DataLoader over a
TensorDataset, batch 64): the same iterations with `rewind=True` and `rewind=False`, the two
alternating round by round, each on its own copy of the model. Prints the median time per
iteration, the ratio, and the bytes the checkpoints hold at the end. A checkpoint is one copy of
the parameters, grads and Adam state plus a copy of the batch (a DataLoader is replayed from
kept batches).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from modscope.core.session import Session, SessionOptions


def build(depth: int, width: int, device: str) -> tuple[nn.Module, TensorDataset]:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU(), nn.Dropout(0.1)]
    model = nn.Sequential(*layers, nn.Linear(width, 16)).to(device)
    data = TensorDataset(torch.randn(64 * 20, width, device=device), torch.randn(64 * 20, 16))
    return model, data


def time_session(
    model: nn.Module, data: TensorDataset, steps: int, *, rewind: bool, device: str
) -> tuple[float, int]:
    model = copy.deepcopy(model)
    loader = DataLoader(data, batch_size=64, shuffle=True, generator=torch.Generator())
    session = Session.from_objects(
        model,
        inputs=loader,
        compute_loss=lambda m, b: nn.functional.mse_loss(m(b[0]), b[1].to(device)),
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
        options=SessionOptions(rewind=rewind),
    )
    session.run_iteration()  # warm-up: Adam's state, the first batch
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        session.run_iteration()
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = (time.perf_counter() - start) / steps
    held = session._checkpoints.nbytes if session._checkpoints is not None else 0
    session.close()
    return elapsed, held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    args = parser.parse_args()
    model, data = build(args.depth, args.width, args.device)
    times: dict[bool, list[float]] = {True: [], False: []}
    held = 0
    for _ in range(args.rounds):
        for rewind in (False, True):
            elapsed, nbytes = time_session(
                model, data, args.steps, rewind=rewind, device=args.device
            )
            times[rewind].append(elapsed)
            held = max(held, nbytes)
    off = statistics.median(times[False]) * 1e3
    on = statistics.median(times[True]) * 1e3
    n = sum(p.numel() for p in model.parameters())
    print(f"MLP {args.depth}x{args.width}, {n:,} parameters, {args.device}, {args.steps} steps")
    print(f"  session, rewind=False   {off:8.3f} ms/iteration")
    print(f"  session, rewind=True    {on:8.3f} ms/iteration   x{on / off:.2f}")
    print(f"  checkpoints held at the end: {held / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
