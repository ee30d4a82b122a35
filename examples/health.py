"""A model left in eval mode while it trains, with a loss that broadcasts (issue 13's doctor).

Two slips that raise no error. `model.eval()` for a look at the untrained model's predictions,
and no `model.train()` after it: BatchNorm then normalises with its initial running statistics
and never updates them, and dropout stays off, for every training step. And a target of shape
(8,) against an output of shape (8, 1): `F.mse_loss` broadcasts them to (8, 8) and compares every
prediction with every target; PyTorch only warns.
In modscope: `modscope check examples/health.py` reports training-in-eval (naming the BatchNorm1d
and the Dropout) and torch-warning (at this file's loss line).
Prints: the loss of 5 training steps, then "running_mean moved: False" and "loss over (8, 8)".
health_fixed.py: "running_mean moved: True" and "loss over (8, 1)".
"""

import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(0)


class Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2))
        self.head = nn.Linear(16, 1)

    def forward(self, x):
        return self.head(self.body(x))


model = Regressor()
inputs = torch.randn(8, 4)
target = inputs.sum(dim=1)  # the bug: shape (8,), while the output's is (8, 1)

model.eval()  # a look at the untrained model's predictions...
with torch.no_grad():
    untrained = model(inputs)
# ...and the bug: no model.train() after it


def loss_fn(output):
    return F.mse_loss(output, target)


optimizer = torch.optim.SGD(model.parameters(), lr=0.05)

if __name__ == "__main__":
    for i in range(5):
        optimizer.zero_grad()
        output = model(inputs)
        loss = loss_fn(output)
        loss.backward()
        optimizer.step()
        print(i, "loss", f"{loss.item():.4f}")
    moved = not torch.equal(model.body[1].running_mean, torch.zeros(16))
    print("running_mean moved:", moved)
    print("loss over", tuple(torch.broadcast_shapes(output.shape, target.shape)))
