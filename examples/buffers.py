"""Running state in registered buffers, updated only in train mode (lessons 3-5, Buffer Code 3).

powBuff/logBuff: exponential averages of the input (x * 0.4 + old * 0.6), `register_buffer`ed.
The article's bug is kept: logBuff is computed from powModel's output, which requires grad, so it
carries autograd history (grad_fn=AddBackward0); forward only (`loss_fn = None`), since a second
backward would fail ("Trying to backward through the graph a second time"). In modscope:
`modscope check examples/buffers.py` reports buffer-grad-history at `logModel.logBuff`.
Reference: 10th train call powBuff 4.9698, logBuff 116.3565, z 4.7567; eval keeps z 4.7567.
"""

import torch


class PowModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.powParam = torch.nn.Parameter(torch.tensor(1.0))
        self.register_buffer("powBuff", torch.tensor(0.0))

    def forward(self, x, q):
        if self.training:
            self.powBuff = self.powBuff * 0.6 + x * 0.4
        return self.powParam * self.powBuff**q


class LogModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.logParam = torch.nn.Parameter(torch.tensor(1.0))
        self.register_buffer("logBuff", torch.tensor(0.0))

    def forward(self, x):
        if self.training:
            self.logBuff = self.logBuff * 0.6 + x * 0.4  # x requires grad: so will logBuff
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
    for mode in ("train", "eval"):
        model.train(mode == "train")
        for i in range(10):
            z = model(*inputs)
            print(mode, i, "z", f"{z.item():.4f}", end=" ")
            print("powBuff", show(model.powModel.powBuff), "logBuff", show(model.logModel.logBuff))
    print("state", {name: f"{value.item():.4f}" for name, value in model.state_dict().items()})
