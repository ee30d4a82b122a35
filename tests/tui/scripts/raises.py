"""A forward that raises at its second call, then works again (the session must go on)."""

import torch

calls = 0


class Flaky(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        global calls
        calls += 1
        if calls == 2:
            raise ValueError("flaky forward failed on call 2")
        return self.weight * x


model = Flaky()
inputs = torch.tensor(3.0)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
