"""A NaN that starts in backward while the forward stays finite: sqrt of a zero-norm row.

`blocks.1.length` (a `RowLength`) appends each row's length, sqrt(sum(x * x)), to the row. The
third batch holds a padding row of zeros, which stays zero through the bias-free layers: its
length is sqrt(0) = 0, finite, but the derivative of sqrt at 0 is infinite, and inf * 0 is NaN
(a ReLU after it would zero that gradient again: the length sits right after the Linear).
So step 3's forward and loss are finite, its backward writes NaN into the gradients, the
optimizer step copies it into the weights, and the loss turns NaN only at step 4.
In modscope: `modscope run examples/nan_backward.py --steps 5 --break nan` stops at step 3, in
the backward phase, at blocks.1.length (RowLength) and exits 1. The fix:
`torch.linalg.vector_norm(x, dim=-1, keepdim=True)`, whose gradient at zero is zero.
Prints: the loss of 5 training steps (NaN from step 4).
"""

import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(0)


class RowLength(nn.Module):
    """The row with its Euclidean length appended (one more feature)."""

    def forward(self, x):
        length = torch.sqrt((x * x).sum(dim=-1, keepdim=True))
        return torch.cat([x, length], dim=-1)


class Block(nn.Module):
    def __init__(self, width, out, with_length=False):
        super().__init__()
        self.linear = nn.Linear(width, out - 1 if with_length else out, bias=False)
        self.act = nn.ReLU()
        self.length = RowLength() if with_length else nn.Identity()

    def forward(self, x):
        return self.act(self.length(self.linear(x)))


class Net(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.blocks = nn.Sequential(
            Block(width, width), Block(width, width, with_length=True), Block(width, width)
        )
        self.head = nn.Linear(width, 1, bias=False)

    def forward(self, x):
        return self.head(self.blocks(x))


model = Net()
batches = [torch.randn(4, 8) for _ in range(5)]
batches[2][3] = 0.0  # step 3: a padding row of zeros
inputs = batches


def loss_fn(output):
    return F.mse_loss(output, torch.ones_like(output))


optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

if __name__ == "__main__":
    for step, batch in enumerate(batches, start=1):
        optimizer.zero_grad()
        loss = loss_fn(model(batch))
        loss.backward()
        optimizer.step()
        print("step", step, "loss", f"{loss.item():.4f}")
