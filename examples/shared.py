"""One module instance called twice in forward (the article's Parameter Code 4).

forward runs powModel and logModel twice and returns (z1 + z2) / 2: each parameter collects
gradient from both calls, twice the half-weighted share, so training follows powlog.py exactly.
In modscope: `modscope check examples/shared.py` reports reused-module (info) for powModel and
logModel. Reference: identical to powlog.py: iteration 0 powParam 1.1034, logParam 1.4994;
iteration 9 powParam 1.2430, logParam 1.9815; final z 9.9982.
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
        y1 = self.powModel(x, q)
        z1 = self.logModel(y1)
        y2 = self.powModel(x, q)
        z2 = self.logModel(y2)
        return (z1 + z2) / 2


def loss_fn(z):
    return (z - 10.0) ** 2


model = PowLogModel()
inputs = (torch.tensor(5.0), torch.tensor(3.0))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

if __name__ == "__main__":
    print("z", f"{model(*inputs).item():.4f}")
    for i in range(10):
        optimizer.zero_grad()
        output = model(*inputs)
        loss = loss_fn(output)
        loss.backward()
        optimizer.step()
        for name, parameter in model.named_parameters():
            print(i, name, f"{parameter.item():.4f}")
    print("z", f"{model(*inputs).item():.4f}")
