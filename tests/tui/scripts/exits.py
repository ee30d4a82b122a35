"""A forward that calls sys.exit() at its second call and raises KeyboardInterrupt at its third,
then works again: neither may take the app down."""

import sys

import torch

calls = 0


class Quitter(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        global calls
        calls += 1
        if calls == 2:
            sys.exit(3)
        if calls == 3:
            raise KeyboardInterrupt
        return self.weight * x


model = Quitter()
inputs = torch.tensor(3.0)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
