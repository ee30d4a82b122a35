"""Your own training loop, watched: a DataLoader, AdamW and a cosine schedule, unchanged but for
one `with modscope.watch(...)` line.

Run it with `python examples/own_loop.py` (add `--record DIR`, then `modscope replay DIR` to open
the recorded run in the app). A step is one `optimizer.step()`; each keeps what `modscope run`
keeps: the loss, every gradient's summary, the `state_dict` diff, the doctor's findings.
`breaks=["nan"]` would stop where a NaN starts (docs/watch.md).
Prints: the loss of each epoch, the number of steps watched, and the doctor's findings.
"""

import argparse

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import modscope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", metavar="DIR", help="record the watched run to DIR")
    args = parser.parse_args()

    torch.manual_seed(0)
    features = torch.randn(64, 10)
    targets = features @ torch.randn(10, 1) + 0.1 * torch.randn(64, 1)
    loader = DataLoader(TensorDataset(features, targets), batch_size=16, shuffle=True)
    model = nn.Sequential(nn.Linear(10, 32), nn.GELU(), nn.LayerNorm(32), nn.Linear(32, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=12)

    with modscope.watch(model, optimizer, record=args.record, overwrite=True) as watch:
        for epoch in range(3):
            total = 0.0
            for x, y in loader:
                optimizer.zero_grad()
                loss = nn.functional.mse_loss(model(x), y)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += loss.item()
            print(f"epoch {epoch}: loss {total / len(loader):.4f}")

    print(f"steps watched: {watch.step_count}")
    for finding in watch.findings:
        print(f"{finding.severity.value}: {finding.kind.value} {finding.path}: {finding.message}")


if __name__ == "__main__":
    main()
