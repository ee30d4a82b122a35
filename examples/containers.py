"""Submodules kept in a plain Python list are not registered (lesson 1, Module Code 3 and 6).

`Module.__setattr__` registers only Modules and Parameters; a list (or dict) holding modules is a
plain attribute, so `named_children()` is [] and `parameters()`, `state_dict()` and `.to()` miss
both children. There is no `optimizer` here on purpose: `torch.optim.SGD(model.parameters())`
raises "optimizer got an empty parameter list", the first symptom of this bug.
In modscope: `modscope check examples/containers.py` reports unregistered-module at `modelList`.
Reference: z 4.8283, named_children [], no parameters; see containers_fixed.py for the fix.
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
        self.modelList = [PowModel(), LogModel()]  # a plain list: nothing gets registered

    def forward(self, x, q):
        y = self.modelList[0](x, q)
        z = self.modelList[1](y)
        return z


def loss_fn(z):
    return (z - 10.0) ** 2


model = PowLogModel()
inputs = (torch.tensor(5.0), torch.tensor(3.0))

if __name__ == "__main__":
    output = model(*inputs)
    loss = loss_fn(output)
    loss.backward()
    print("z", f"{output.item():.4f}")
    print("named_children", list(model.named_children()))
    print("parameters", [name for name, _ in model.named_parameters()])
    print("state_dict", list(model.state_dict()))
    try:
        torch.optim.SGD(model.parameters(), lr=0.01)
    except ValueError as error:
        print("optimizer", error)
