"""The article's running example, trained (Parameter Code 3).

z = logParam * log(powParam * x ** q) with x = 5, q = 3, loss (z - 10) ** 2, SGD lr 0.01.
In modscope: `modscope tree examples/powlog.py` shows powModel.powParam and logModel.logParam;
`modscope run examples/powlog.py --steps 10` follows the same trajectory as this file's main block.
Reference: z 4.8283 before training; after iteration 0 powParam 1.1034, logParam 1.4994; after
iteration 9 powParam 1.2430, logParam 1.9815; then z 9.9982.
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
        y = self.powModel(x, q)
        z = self.logModel(y)
        return z


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
