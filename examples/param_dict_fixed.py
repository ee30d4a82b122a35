"""param_dict.py fixed with nn.ParameterDict (lesson 2).

`torch.nn.ParameterDict` is a Module that registers what it holds, so powParam appears as
`powModel.powParamDict.powParam` in named_parameters, state_dict and the optimizer.
(`self.register_parameter("powParam", ...)` or `nn.ParameterList` work as well.)
In modscope: `modscope check examples/param_dict_fixed.py` finds no unregistered-parameter.
Reference: the powlog.py trajectory: iteration 9 powParam 1.2430, logParam 1.9815; final z 9.9982.
"""

import torch


class PowModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.powParamDict = torch.nn.ParameterDict(
            {"powParam": torch.nn.Parameter(torch.tensor(1.0))}
        )

    def forward(self, x, q):
        return self.powParamDict["powParam"] * x**q


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
    print("parameters", [name for name, _ in model.named_parameters()])
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
