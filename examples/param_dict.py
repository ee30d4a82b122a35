"""A Parameter kept in a plain dict is not registered (lesson 2, Parameter Code 2).

powModel keeps powParam in `powParamDict`, a plain dict: `named_parameters()` lists only
logModel.logParam, so the optimizer never updates powParam (it still gets a gradient) and
`state_dict()` does not save it. In modscope: `modscope check examples/param_dict.py` reports
unregistered-parameter at `powModel.powParamDict`. Reference: z 4.8283; parameters
['logModel.logParam'] (the article's Parameter Code 2); while training, powParam stays 1.0000.
"""

import torch


class PowModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.powParamDict = {"powParam": torch.nn.Parameter(torch.tensor(1.0))}

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
    powParam = model.powModel.powParamDict["powParam"]
    logParam = model.logModel.logParam
    for i in range(10):
        optimizer.zero_grad()
        output = model(*inputs)
        loss = loss_fn(output)
        loss.backward()
        optimizer.step()
        print(i, "powParam", f"{powParam.item():.4f}", "logParam", f"{logParam.item():.4f}")
    print("z", f"{model(*inputs).item():.4f}")
