"""Forward-pre, forward and backward hooks on the article's model (lessons 6-7, Hook Code 1-3).

x and q require grad, z itself is the loss, no optimizer; no hook is registered at import:
attach them from modscope, e.g. `modscope run examples/hooks.py --steps 1 --hook
logModel:forward-pre:scale=2` (z 5.5215), `--hook logModel:forward:scale=2` (z 9.6566),
`--hook powModel:legacy-backward` (grad_input (1.0, 0.0080)) or `--hook powModel:backward`
(grad_input (0.6000, 1.6094): x.grad and q.grad). The main block registers each with plain PyTorch.
Reference: no hook z 4.8283; the four numbers above, as the article prints them.
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
    """A fresh (x, q) per iteration, both requiring grad, as in the article's Hook Codes."""
    return torch.tensor(5.0, requires_grad=True), torch.tensor(3.0, requires_grad=True)


def loss_fn(z):
    return z


model = PowLogModel()


def show(tensors):
    """Format a tensor or a tuple of tensors (None for an absent gradient) to 4 decimals."""
    if isinstance(tensors, torch.Tensor):
        return f"{tensors.item():.4f}"
    values = ", ".join("None" if t is None else f"{t.item():.4f}" for t in tensors)
    return f"({values},)" if len(tensors) == 1 else f"({values})"


def forward_pre_hook(module, args):
    print("  input", show(args))
    first, *rest = args
    return (first * 2, *rest)


def forward_hook(module, args, output):
    print("  input", show(args), "output", show(output))
    return output * 2


def backward_hook(module, grad_input, grad_output):
    print("  grad_input", show(grad_input), "grad_output", show(grad_output))


def run_once(hooked):
    """One default iteration (forward, loss, backward; no optimizer), then the article's prints."""
    x, q = inputs()
    output = hooked(x, q)
    loss = loss_fn(output)
    loss.backward()
    print("  z", show(output), "x.grad", show(x.grad), "q.grad", show(q.grad), end=" ")
    print("powParam.grad", show(hooked.powModel.powParam.grad), end=" ")
    print("logParam.grad", show(hooked.logModel.logParam.grad))


if __name__ == "__main__":
    print("no hook")
    run_once(model)

    print("logModel forward-pre hook, input * 2 (Hook Code 1)")
    hooked = PowLogModel()
    handle = hooked.logModel.register_forward_pre_hook(forward_pre_hook)
    run_once(hooked)
    handle.remove()

    print("logModel forward hook, output * 2 (Hook Code 2)")
    hooked = PowLogModel()
    handle = hooked.logModel.register_forward_hook(forward_hook)
    run_once(hooked)
    handle.remove()

    print("powModel legacy backward hook (Hook Code 3)")
    hooked = PowLogModel()
    handle = hooked.powModel.register_backward_hook(backward_hook)
    run_once(hooked)
    handle.remove()

    print("powModel full backward hook")
    hooked = PowLogModel()
    handle = hooked.powModel.register_full_backward_hook(backward_hook)
    run_once(hooked)
    handle.remove()
