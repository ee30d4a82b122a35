"""Two separate instances of each module (the article's Parameter Code 5).

Compare with shared.py: the same forward, (z1 + z2) / 2, but powModel1/powModel2 and
logModel1/logModel2 are distinct modules, so each parameter gets only its half of the gradient and
moves more slowly. In modscope: `modscope tree examples/separate.py` shows four parameters where
shared.py has two. Reference: iteration 0 each powParam 1.0517, logParam 1.2497; iteration 9 each
powParam 1.2401, logParam 1.9373; final z 9.7706.
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
        self.powModel1 = PowModel()
        self.logModel1 = LogModel()
        self.powModel2 = PowModel()
        self.logModel2 = LogModel()

    def forward(self, x, q):
        y1 = self.powModel1(x, q)
        z1 = self.logModel1(y1)
        y2 = self.powModel2(x, q)
        z2 = self.logModel2(y2)
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
