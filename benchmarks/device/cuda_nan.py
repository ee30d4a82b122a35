"""`examples/nan_origin.py` on CUDA, for the device check: `--break nan` must stop at step 3, in
the forward phase, at `blocks.1.gate` (log of a negative value), as it does on the CPU."""

import torch
from torch import nn

torch.manual_seed(0)
device = "cuda" if torch.cuda.is_available() else "cpu"


class LogGate(nn.Module):
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


# The same initial weights and data as the CPU example, then moved.
model = Net()
inputs = torch.randn(16, 8)
target = torch.randn(16, 1)
model, inputs, target = model.to(device), inputs.to(device), target.to(device)


def loss_fn(output):
    return nn.functional.mse_loss(output, target)


gate = list(model.blocks[1].gate.parameters())
rest = [p for name, p in model.named_parameters() if ".gate." not in name]
optimizer = torch.optim.SGD([{"params": rest}, {"params": gate, "lr": 8.0}], lr=0.05)
