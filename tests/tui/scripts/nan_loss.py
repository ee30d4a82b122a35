"""A loss that turns NaN at the first step (the log of a negative number)."""

import torch


class Shift(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.tensor(-1.0))

    def forward(self, x):
        return torch.log(x + self.bias)


model = Shift()
inputs = torch.tensor(0.5)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
