"""A hook the script registers itself: the legacy backward hook of Hook Code 3 (lesson 7).

At import, `register_backward_hook` (PyTorch's old, non-full hook) goes on powModel; it prints the
grad_input it receives. modscope did not add it, so it must list it in the hooks pane (function
name and file:line) and leave it alone. In modscope: `modscope check
examples/hooks_script_registered.py` warns legacy-backward-hook at `powModel`.
Reference: grad_input (1.0000, 0.0080), grad_output (0.0080,): the gradients of
`powParam * (x ** q)`, not of x and q (0.6000, 1.6094); z 4.8283.
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


def inputs():
    return torch.tensor(5.0, requires_grad=True), torch.tensor(3.0, requires_grad=True)


def loss_fn(z):
    return z


def show(tensors):
    values = ", ".join(f"{t.item():.4f}" for t in tensors)
    return f"({values},)" if len(tensors) == 1 else f"({values})"


def backward_hook(module, grad_input, grad_output):
    print("grad_input", show(grad_input), "grad_output", show(grad_output))


model = PowLogModel()
model.powModel.register_backward_hook(backward_hook)

if __name__ == "__main__":
    x, q = inputs()
    output = model(x, q)
    loss = loss_fn(output)
    loss.backward()
    print("z", f"{output.item():.4f}", "x.grad", f"{x.grad.item():.4f}", end=" ")
    print("q.grad", f"{q.grad.item():.4f}")
