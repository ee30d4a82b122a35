"""A forward that takes a while, so keys pressed during an iteration can be seen queued."""

import threading

import torch

# Each forward waits until the test releases it, so "a step is running" is a fact, not a race.
gate = threading.Semaphore(0)


class Slow(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        gate.acquire(timeout=30)
        return self.weight * x


model = Slow()
inputs = torch.tensor(2.0)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
