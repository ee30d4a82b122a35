"""health.py fixed: the model back in train mode, the target shaped as the output.

`model.train()` after the look at the untrained model: BatchNorm normalises each batch with its
own statistics and updates its running ones, dropout drops. `inputs.sum(dim=1, keepdim=True)`
has the output's shape (8, 1): `F.mse_loss` compares each prediction with its own target, and
PyTorch has nothing to warn about.
In modscope: `modscope check examples/health_fixed.py` finds neither training-in-eval nor
torch-warning.
Prints: the loss of 5 training steps, then "running_mean moved: True" and "loss over (8, 1)".
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
target = inputs.sum(dim=1, keepdim=True)  # shape (8, 1), as the output's

model.eval()  # a look at the untrained model's predictions...
with torch.no_grad():
    untrained = model(inputs)
model.train()  # ...and back to training


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
