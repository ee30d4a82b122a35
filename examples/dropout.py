"""F.dropout without `training=self.training` keeps dropping in eval mode (lesson 8).

`torch.nn.functional.dropout(x, p)` defaults to `training=True`; unlike `nn.Dropout` (Functional
Code 5) it does not look at the module's mode, so `model.eval()` does not switch it off and two
eval passes on the same input differ. "State is not only parameters and buffers."
In modscope: `modscope check examples/dropout.py` reports eval-nondeterministic.
Prints: the loss of 5 training steps, then "eval outputs equal: False". dropout_fixed.py: True.
"""

import torch
import torch.nn.functional as F

torch.manual_seed(0)


class DropoutModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = torch.nn.Linear(4, 16)
        self.out = torch.nn.Linear(16, 1)

    def forward(self, x):
        h = F.relu(self.hidden(x))
        h = F.dropout(h, p=0.5)  # the bug: training=self.training is missing
        return self.out(h)


model = DropoutModel()
inputs = torch.randn(8, 4)
target = torch.randn(8, 1)


def loss_fn(output):
    return F.mse_loss(output, target)


optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

if __name__ == "__main__":
    for i in range(5):
        optimizer.zero_grad()
        output = model(inputs)
        loss = loss_fn(output)
        loss.backward()
        optimizer.step()
        print(i, "loss", f"{loss.item():.4f}")
    model.eval()
    with torch.no_grad():
        first, second = model(inputs), model(inputs)
    print("eval outputs equal:", torch.equal(first, second))
