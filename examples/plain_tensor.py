"""Running state in plain tensor attributes is not module state (lesson 3, Buffer Code 1).

powBuff/logBuff: exponential averages of the input (x * 0.4 + old * 0.6) as plain attributes:
forward works, but `state_dict()` holds only the two parameters and `.to()` does not move them.
Forward only (`loss_fn = None`); buffers.py registers them. In modscope: `modscope check
examples/plain_tensor.py` warns unregistered-tensor at `powModel.powBuff` and `logModel.logBuff`.
Reference: 10th call powBuff 4.9698, logBuff 116.3565 (with grad_fn, as in the article),
z 4.7567; state ['powModel.powParam', 'logModel.logParam'].
"""

import torch


class PowModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.powParam = torch.nn.Parameter(torch.tensor(1.0))
        self.powBuff = torch.tensor(0.0)

    def forward(self, x, q):
        self.powBuff = self.powBuff * 0.6 + x * 0.4
        return self.powParam * self.powBuff**q


class LogModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.logParam = torch.nn.Parameter(torch.tensor(1.0))
        self.logBuff = torch.tensor(0.0)

    def forward(self, x):
        self.logBuff = self.logBuff * 0.6 + x * 0.4
        return self.logParam * torch.log(self.logBuff)


class PowLogModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.powModel = PowModel()
        self.logModel = LogModel()

    def forward(self, x, q):
        y = self.powModel(x, q)
        z = self.logModel(y)
        return z


model = PowLogModel()
inputs = (torch.tensor(5.0), torch.tensor(3.0))
loss_fn = None


def show(tensor):
    history = f" grad_fn={tensor.grad_fn.name()}" if tensor.grad_fn is not None else ""
    return f"{tensor.item():.4f}{history}"


if __name__ == "__main__":
    for i in range(10):
        z = model(*inputs)
        print(i, "z", f"{z.item():.4f}", end=" ")
        print("powBuff", show(model.powModel.powBuff), "logBuff", show(model.logModel.logBuff))
    print("state", list(model.state_dict()))
