"""Dead ReLU units and a saturated sigmoid gate: layers that cannot learn, though nothing fails.

`hidden.bias` starts at -6, so every pre-activation of the ReLU is negative: its outputs are all
exactly zero, no gradient flows back through it, and `hidden` never changes. The gate's logits
are 40 times too large, so most sigmoid outputs sit within 0.01 of 0 or 1, where its slope is
under 0.01. The loss falls only through `out.bias`.
In modscope: `modscope check examples/layer_health.py` reports dead-units at `act` and saturated
at `gate`; `modscope run examples/layer_health.py --layers` shows them in the layers table (dead
100%, saturated above 50%), and `l` in the app. layer_health_fixed.py has neither.
Prints: the loss of 5 steps, then how many hidden units are dead and the gate's share at rails.
"""

import torch
import torch.nn.functional as F
from torch import nn

torch.manual_seed(0)


class GatedMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(8, 16)
        self.act = nn.ReLU()
        self.gate_in = nn.Linear(8, 16)
        self.gate = nn.Sigmoid()
        self.out = nn.Linear(16, 1)
        with torch.no_grad():
            self.hidden.bias.fill_(-6.0)  # the bug: every unit starts below zero
            self.gate_in.weight.mul_(40.0)  # the bug: logits far from zero

    def forward(self, x):
        return self.out(self.act(self.hidden(x)) * self.gate(self.gate_in(x)))


model = GatedMLP()
inputs = torch.randn(32, 8)
target = torch.randn(32, 1)


def loss_fn(output):
    return F.mse_loss(output, target)


optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

if __name__ == "__main__":
    for i in range(5):
        optimizer.zero_grad()
        loss = loss_fn(model(inputs))
        loss.backward()
        optimizer.step()
        print(i, "loss", f"{loss.item():.4f}")
    with torch.no_grad():
        hidden = model.act(model.hidden(inputs))
        gate = model.gate(model.gate_in(inputs))
    dead = int((hidden == 0).all(dim=0).sum())
    print(f"dead hidden units: {dead} of {hidden.shape[1]}")
    at_rails = ((gate <= 0.01) | (gate >= 0.99)).float().mean()
    print(f"gate outputs at the rails: {float(at_rails):.2f}")
