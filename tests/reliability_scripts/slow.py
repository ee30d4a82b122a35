"""A model whose every forward takes a while and says so on stderr: for Ctrl-C and progress."""

import os
import time

import torch
from torch import nn

DELAY = float(os.environ.get("SLOW_DELAY", "0.2"))


class Slow(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        time.sleep(DELAY)
        print(f"forward {self.calls}", flush=True)
        return self.lin(x).sum()


model = Slow()
inputs = torch.ones(2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
