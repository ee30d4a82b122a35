"""Names that are terminal commands: escapes, a newline, a bidi override, a very long name."""

import torch
from torch import nn

EVIL = "evil\x1b[2J\nname"
LONG = "long" + "x" * 200

OddClass = type("Odd\x1b[7mClass\n", (nn.Module,), {"forward": lambda self, x: x})


class Evil(nn.Module):
    def __init__(self):
        super().__init__()
        self.add_module(EVIL, nn.Linear(2, 2))
        self.add_module("\u202eright", OddClass())
        self.add_module(LONG, nn.Identity())
        self.register_buffer("buf\x1b[31m", torch.zeros(2))

    def forward(self, x):
        x = self.get_submodule(EVIL)(x)
        x = self.get_submodule("\u202eright")(x)
        return self.get_submodule(LONG)(x).sum() + self.get_buffer("buf\x1b[31m").sum()


torch.manual_seed(0)
model = Evil()
inputs = torch.ones(3, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
print("\x1b[31mred\x1b[0m")
