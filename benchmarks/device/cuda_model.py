"""A model on CUDA for the device check: BatchNorm, Dropout, an in-place ReLU, tied weights."""

import torch
from torch import nn

torch.manual_seed(0)
device = "cuda" if torch.cuda.is_available() else "cpu"


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(128, 64)
        self.body = nn.Sequential(
            nn.Linear(64, 256),
            nn.BatchNorm1d(256),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
            nn.Linear(256, 64),
        )
        self.head = nn.Linear(64, 128, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens):
        return self.head(self.body(self.embed(tokens)))


model = Net().to(device)
generator = torch.Generator(device=device).manual_seed(1)


def inputs():
    return torch.randint(0, 128, (32,), device=device, generator=generator)


def compute_loss(model, batch):
    return nn.functional.cross_entropy(model(batch), batch)


optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

if __name__ == "__main__":
    import sys

    for _ in range(int(sys.argv[1])):
        optimizer.zero_grad()
        loss = compute_loss(model, inputs())
        loss.backward()
        optimizer.step()
    torch.save(model.state_dict(), sys.argv[2])
