"""layer_health.py fixed: the default initialisation keeps every unit alive and the gate responsive.

`nn.Linear`'s own initialisation (bias and weights uniform in +-1/sqrt(fan_in)) puts the ReLU's
pre-activations on both sides of zero and the gate's logits near it, where the sigmoid's slope is
largest; the same data and optimizer as layer_health.py, and every layer learns.
In modscope: `modscope check examples/layer_health_fixed.py` finds no dead-units or saturated.
Prints: the loss of 5 steps, then "dead hidden units: 0 of 16" and the gate's share at the rails.
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
