"""Names and prints that look like markup, a plain list of modules, a frozen and a tied weight."""

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(2, 2)

    def forward(self, x):
        return self.proj(x)


class Traps(nn.Module):
    def __init__(self):
        super().__init__()
        self.add_module("blocks[attn]", Block())
        self.head = nn.Linear(2, 2, bias=False)
        self.tail = nn.Linear(2, 2, bias=False)
        self.tail.weight = self.head.weight
        self.frozen = nn.Linear(2, 1)
        self.frozen.requires_grad_(False)
        self.helpers = [nn.Linear(2, 2)]
        self.register_buffer("running", torch.zeros(2))

    def forward(self, x):
        x = self.get_submodule("blocks[attn]")(x)
        return self.frozen(self.tail(self.head(x))).sum()


torch.manual_seed(0)
model = Traps()
inputs = torch.ones(3, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
print("x[/y] and [bold]not bold[/bold]")
