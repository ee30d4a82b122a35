"""The article's running example (a fixed copy for the app's tests and snapshots).

z = logParam * log(powParam * x ** q), x = 5, q = 3, loss (z - 10) ** 2, SGD lr 0.01: after
one step powParam 1.1034, logParam 1.4994; after ten 1.2430 and 1.9815.
"""

import torch


class PowModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.powParam = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, x, q):
        return self.powParam * x**q


class LogModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.logParam = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, x):
        return self.logParam * torch.log(x)


class PowLogModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.powModel = PowModel()
        self.logModel = LogModel()

    def forward(self, x, q):
        return self.logModel(self.powModel(x, q))


def loss_fn(z):
    return (z - 10.0) ** 2


model = PowLogModel()
inputs = (torch.tensor(5.0), torch.tensor(3.0))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
