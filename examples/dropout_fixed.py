"""dropout.py fixed: F.dropout is told the module's mode (lesson 8, Functional Code 6).

`F.dropout(h, p=0.5, training=self.training)` drops only in train mode, like a registered
`nn.Dropout(0.5)` submodule would (Functional Code 5), so eval passes are deterministic.
In modscope: `modscope check examples/dropout_fixed.py` finds no eval-nondeterministic.
Prints: the loss of 5 training steps (the same as dropout.py), then "eval outputs equal: True".
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
        h = F.dropout(h, p=0.5, training=self.training)
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
