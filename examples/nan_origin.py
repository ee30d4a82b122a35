"""A NaN that starts in one module of a deeper model at a known step: the forward case.

`blocks.1.gate` (a `LogGate`) computes log(x + offset) over the ReLU's output, and nothing keeps
x + offset positive. Its offset has a parameter group of its own with lr=8 ("offsets learn
slowly"): the update of step 2 pushes one entry below zero, so in step 3's forward log() of a
negative value gives NaN, and every module after the gate passes it on. The loss only says
"nan from step 3"; the question a debugger answers is which module made it.
In modscope: `modscope run examples/nan_origin.py --steps 5 --break nan` stops at step 3, in
the forward phase, at blocks.1.gate (LogGate), and exits 1 (docs/time_travel.md walks through
it). The fix: `torch.log((x + self.offset).clamp_min(1e-3))`, or a sane lr for the offset.
Prints: the loss of 5 training steps (NaN from step 3).
"""

import torch
from torch import nn

torch.manual_seed(0)


class LogGate(nn.Module):
    """log(x + offset) per feature: finite only while x + offset > 0."""

    def __init__(self, width):
        super().__init__()
        self.offset = nn.Parameter(torch.ones(width))

    def forward(self, x):
        return torch.log(x + self.offset)


class Block(nn.Module):
    def __init__(self, width, gated=False):
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.act = nn.ReLU(inplace=True)
        self.gate = LogGate(width) if gated else nn.Identity()

    def forward(self, x):
        return self.gate(self.act(self.linear(x)))


class Net(nn.Module):
    def __init__(self, width=8, depth=3):
        super().__init__()
        self.blocks = nn.Sequential(*(Block(width, gated=i == 1) for i in range(depth)))
        self.head = nn.Linear(width, 1)

    def forward(self, x):
        return self.head(self.blocks(x))


model = Net()
inputs = torch.randn(16, 8)
target = torch.randn(16, 1)


def loss_fn(output):
    return nn.functional.mse_loss(output, target)


gate = list(model.blocks[1].gate.parameters())
rest = [p for name, p in model.named_parameters() if ".gate." not in name]
optimizer = torch.optim.SGD([{"params": rest}, {"params": gate, "lr": 8.0}], lr=0.05)

if __name__ == "__main__":
    for step in range(1, 6):
        optimizer.zero_grad()
        loss = loss_fn(model(inputs))
        loss.backward()
        optimizer.step()
        print("step", step, "loss", f"{loss.item():.4f}")
