"""containers.py fixed with nn.ModuleList (lesson 1, Module Code 5).

`torch.nn.ModuleList` is a Module, so assigning it registers it and, through it, both children:
named_children shows `modelList`, the parameters are `modelList.0.powParam` and
`modelList.1.logParam`, and the optimizer sees them. (`nn.ModuleDict` or `add_module()` fix a dict
the same way: Module Code 4 and 7.) In modscope: `modscope check examples/containers_fixed.py`
finds no unregistered-module. Reference: z 4.8283 before training, then the powlog.py trajectory:
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
        self.modelList = torch.nn.ModuleList([PowModel(), LogModel()])

    def forward(self, x, q):
        y = self.modelList[0](x, q)
        z = self.modelList[1](y)
        return z


def loss_fn(z):
    return (z - 10.0) ** 2


model = PowLogModel()
inputs = (torch.tensor(5.0), torch.tensor(3.0))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

if __name__ == "__main__":
    print("named_children", [name for name, _ in model.named_children()])
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
